using System.Reflection;
using Cocona;

namespace IlgpuTune.Cli;

/// <summary>
/// Checks the command line against the command classes before Cocona binds it, so that a misspelt verb or option gets
/// one `error:` line with the nearest name and exit 2 (Cocona alone prints "Unknown option" without a suggestion and
/// exits 129). Reads the same attributes Cocona reads, so new verbs and options need nothing here.
/// </summary>
internal static class CliUsage
{
    /// <summary>The error line for <paramref name="args"/>, or null when every verb and option is known.</summary>
    public static string? Check(string[] args, IReadOnlyList<Type> commandClasses)
    {
        IReadOnlyList<Type> types = commandClasses;
        var path = new List<string>();
        MethodInfo? method = null;
        int i = 0;
        for (; i < args.Length && !args[i].StartsWith('-'); i++)
        {
            var verbs = Verbs(types);
            if (!verbs.TryGetValue(args[i], out var verb))
            {
                string where = path.Count == 0 ? "" : $" of '{string.Join(' ', path)}'";
                return $"'{args[i]}' is not a command{where}; " +
                    (Suggest(args[i], verbs.Keys) ?? $"'ilgpu-tune {string.Join(' ', path.Append("--help"))}' lists them");
            }
            path.Add(args[i]);
            if (verb.Method is not null)
            {
                method = verb.Method;
                i++;
                break;
            }
            types = [verb.Group!];
        }
        var (flags, valued, shorts) = method is null ? ([], [], []) : Options(method);
        if (method is null) flags.Add("version");
        flags.Add("help");
        shorts.Add('h');
        string command = path.Count == 0 ? "ilgpu-tune" : string.Join(' ', path);
        for (; i < args.Length; i++)
        {
            string a = args[i];
            if (a == "--") break;
            if (a.StartsWith("--", StringComparison.Ordinal))
            {
                int eq = a.IndexOf('=');
                string name = eq < 0 ? a[2..] : a[2..eq];
                if (valued.Contains(name))
                {
                    if (eq < 0) i++; // its value may start with '-' (--temperature -1)
                }
                else if (!flags.Contains(name))
                    return $"unknown option '--{name}' for '{command}'; " +
                        (Suggest("--" + name, flags.Concat(valued).Select(n => "--" + n)) ?? $"'ilgpu-tune {(path.Count == 0 ? "" : command + " ")}--help' lists the options");
            }
            else if (a.Length > 1 && a[0] == '-' && !double.TryParse(a, out _))
            {
                if (!shorts.Contains(a[1]))
                    return $"unknown option '{a}' for '{command}'; 'ilgpu-tune {(path.Count == 0 ? "" : command + " ")}--help' lists the options";
                if (a.Length == 2 && method is not null && ShortTakesValue(method, a[1])) i++;
            }
        }
        return null;
    }

    /// <summary>True when the command line asks for help (Cocona answers it, with exit code 129 that we turn into 0).</summary>
    public static bool AsksForHelp(string[] args) =>
        args.TakeWhile(a => a != "--").Any(a => a is "-h" or "--help");

    sealed record Verb(MethodInfo? Method, Type? Group);

    // Cocona's rules: every public method of a command class is a command (its [Command] name, else its name in
    // kebab case) unless [Ignore]d; [HasSubCommands] adds a group.
    static Dictionary<string, Verb> Verbs(IEnumerable<Type> types)
    {
        var verbs = new Dictionary<string, Verb>(StringComparer.Ordinal);
        foreach (var t in types)
        {
            foreach (var m in t.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly))
            {
                if (m.IsSpecialName || m.GetCustomAttribute<IgnoreAttribute>() is not null) continue;
                var attr = m.GetCustomAttribute<CommandAttribute>();
                verbs[attr?.Name ?? Kebab(m.Name)] = new Verb(m, null);
                foreach (var alias in attr?.Aliases ?? []) verbs[alias] = new Verb(m, null);
            }
            foreach (var g in t.GetCustomAttributes<HasSubCommandsAttribute>())
                verbs[g.CommandName ?? Kebab(g.Type.Name)] = new Verb(null, g.Type);
        }
        return verbs;
    }

    static (HashSet<string> Flags, HashSet<string> Valued, HashSet<char> Shorts) Options(MethodInfo method)
    {
        var flags = new HashSet<string>(StringComparer.Ordinal);
        var valued = new HashSet<string>(StringComparer.Ordinal);
        var shorts = new HashSet<char>();
        foreach (var (p, opt) in OptionParameters(method))
        {
            string name = opt?.Name ?? Kebab(p.Name!);
            (IsFlag(p.ParameterType) ? flags : valued).Add(name);
            foreach (char c in opt?.ShortNames ?? []) shorts.Add(c);
        }
        return (flags, valued, shorts);
    }

    static bool ShortTakesValue(MethodInfo method, char c) =>
        OptionParameters(method).Any(o => o.Option?.ShortNames.Contains(c) == true && !IsFlag(o.Parameter.ParameterType));

    // Parameters bound as options: [Option] ones and unattributed ones (Cocona's default), with the constructor
    // parameters of an ICommandParameterSet expanded.
    static IEnumerable<(ParameterInfo Parameter, OptionAttribute? Option)> OptionParameters(MethodInfo method)
    {
        foreach (var p in method.GetParameters())
        {
            if (typeof(ICommandParameterSet).IsAssignableFrom(p.ParameterType))
            {
                foreach (var c in p.ParameterType.GetConstructors().SelectMany(c => c.GetParameters()))
                    if (c.GetCustomAttribute<ArgumentAttribute>() is null) yield return (c, c.GetCustomAttribute<OptionAttribute>());
                continue;
            }
            if (p.GetCustomAttribute<ArgumentAttribute>() is not null || p.GetCustomAttribute<FromServiceAttribute>() is not null) continue;
            yield return (p, p.GetCustomAttribute<OptionAttribute>());
        }
    }

    static bool IsFlag(Type t) => t == typeof(bool) || t == typeof(bool?);

    // Cocona's command case: MaxShardSize / maxShardSize → max-shard-size.
    static string Kebab(string name) =>
        string.Concat(name.Select((c, k) => char.IsUpper(c) ? (k > 0 ? "-" : "") + char.ToLowerInvariant(c) : c.ToString()));

    /// <summary>"did you mean 'X'?" for the nearest candidate by edit distance (or one that starts with the input), else null.</summary>
    internal static string? Suggest(string input, IEnumerable<string> candidates)
    {
        var best = candidates
            .Select(c => (Name: c, Distance: c.StartsWith(input, StringComparison.Ordinal) && input.TrimStart('-').Length >= 2 ? 1 : Distance(input, c)))
            .OrderBy(c => c.Distance).ThenBy(c => c.Name, StringComparer.Ordinal).FirstOrDefault();
        int limit = Math.Max(2, input.TrimStart('-').Length / 3);
        return best.Name is not null && best.Distance <= limit ? $"did you mean '{best.Name}'?" : null;
    }

    // Optimal string alignment distance (a swap of two neighbours counts as one edit: 'trian' → 'train').
    static int Distance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
            {
                int cost = a[i - 1] == b[j - 1] ? 0 : 1;
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + cost);
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
            }
        return d[a.Length, b.Length];
    }
}
