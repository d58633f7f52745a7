using System.Reflection;
using System.Runtime.InteropServices;

namespace IlgpuTune.Cli;

/// <summary>Exit codes of every verb (README "Exit codes").</summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>A user mistake (bad file, key, option, missing path) or the environment (disk full, permission, path is a file, no driver).</summary>
    public const int UserError = 2;
    /// <summary>A bug: one line on stderr plus the path of a crash log holding the stack trace (sysexits EX_SOFTWARE).</summary>
    public const int Internal = 70;
    /// <summary>Stopped by Ctrl-C (128 + SIGINT).</summary>
    public const int Interrupted = 130;
}

/// <summary>
/// The one place where an exception becomes what the user sees. Every verb runs through it (the [FriendlyErrors] filter
/// on each command class, and <see cref="Run"/> around the whole app for what escapes Cocona), so the same bad input ends
/// the same way from every verb:
/// <list type="bullet">
/// <item>user mistakes: the readers' contract — InvalidDataException and its subclasses (ConfigException,
/// DatasetException, TemplateException), NotSupportedException, FileNotFound/DirectoryNotFound — and the argument,
/// format and state exceptions our own code throws with a message written for the user → `error: MESSAGE`, exit 2;</item>
/// <item>the environment: permission, disk full, read-only, a path that is a file, a missing native library, out of
/// memory → `error: WHAT (WHERE)`, exit 2;</item>
/// <item>anything else (a raw NullReference, IndexOutOfRange, a KeyNotFound or ArgumentException from inside the runtime
/// or a library) is a bug → one line naming the crash log that holds the stack trace, exit 70.</item>
/// </list>
/// </summary>
internal static class ErrorBoundary
{
    /// <summary>Runs the app; nothing escapes as a raw stack trace, including exceptions on other threads.</summary>
    public static int Run(Func<int> app)
    {
        AppDomain.CurrentDomain.UnhandledException += (_, e) =>
        {
            // A thread other than main failed: report it the same way, then exit before the runtime prints a stack trace.
            int code = Report(e.ExceptionObject as Exception ?? new Exception(e.ExceptionObject?.ToString()));
            Console.Error.Flush();
            Environment.Exit(code);
        };
        try
        {
            return app();
        }
        catch (Exception e)
        {
            return Report(e);
        }
    }

    /// <summary>Prints the one line for <paramref name="e"/> (and writes a crash log for a bug); returns the exit code.</summary>
    public static int Report(Exception e) => Report(e, Console.Error, CrashDir);

    internal static int Report(Exception e, TextWriter stderr, string crashDir)
    {
        e = Unwrap(e);
        switch (Classify(e))
        {
            case Kind.Interrupted:
                stderr.WriteLine("interrupted");
                return ExitCodes.Interrupted;
            case Kind.User:
                stderr.WriteLine($"error: {(e is Cocona.Command.Binder.ParameterBinderException b ? BindMessage(b) : e.Message.TrimEnd())}");
                return ExitCodes.UserError;
            case Kind.Environment:
                stderr.WriteLine($"error: {EnvironmentMessage(e)}");
                return ExitCodes.UserError;
            default:
                string? log = WriteCrashLog(e, Environment.GetCommandLineArgs()[1..], crashDir);
                string what = $"{e.GetType().Name}: {FirstLine(e.Message)}";
                stderr.WriteLine(log is null
                    ? $"error: internal error ({what}); this is a bug in ilgpu-tune, please report it with the command line"
                    : $"error: internal error ({what}); this is a bug in ilgpu-tune, please report it with the crash log {log}");
                return ExitCodes.Internal;
        }
    }

    internal enum Kind { User, Environment, Internal, Interrupted }

    internal static Kind Classify(Exception e) => e switch
    {
        OperationCanceledException => Kind.Interrupted,
        Cocona.Command.Binder.ParameterBinderException => Kind.User,
        // (The readers' own types, listed apart because they derive from InvalidDataException only once the readers' contract lands.)
        IlgpuTune.Training.ConfigException or IlgpuTune.Data.Datasets.DatasetException or IlgpuTune.Data.Templates.Jinja.TemplateException => Kind.User,
        InvalidDataException or NotSupportedException or FileNotFoundException or DirectoryNotFoundException => Kind.User,
        UnauthorizedAccessException or PathTooLongException or DriveNotFoundException or DllNotFoundException
            or OutOfMemoryException or InsufficientMemoryException => Kind.Environment,
        // EndOfStream / FileLoad are readers' or the runtime's failures, not the disk's.
        EndOfStreamException or FileLoadException => Kind.Internal,
        IOException when e.GetType() == typeof(IOException) => Kind.Environment,
        // Our own code throws these with a message written for the user ("--dtype 'x': expected float32, ..."); the same
        // types thrown from inside the runtime or a library carry no file or key and mean a check is missing: a bug.
        ArgumentException or InvalidOperationException or KeyNotFoundException or FormatException or OverflowException
            when ThrownByUs(e) && e is not (ArgumentNullException or ObjectDisposedException) => Kind.User,
        _ => Kind.Internal,
    };

    static bool ThrownByUs(Exception e) =>
        e.TargetSite?.DeclaringType?.Assembly.GetName().Name is { } name
        && (name.StartsWith("IlgpuTune.", StringComparison.Ordinal) || name == "ilgpu-tune");

    // Wrappers that only say "something inside failed".
    static Exception Unwrap(Exception e)
    {
        while (true)
        {
            switch (e)
            {
                case AggregateException a when a.InnerExceptions.Count >= 1:
                    e = a.InnerExceptions[0];
                    break;
                case TargetInvocationException or TypeInitializationException when e.InnerException is not null:
                    e = e.InnerException;
                    break;
                default:
                    return e;
            }
        }
    }

    // .NET's messages for these already name the path ("No space left on device : '/x/y'", "Access to the path '/x' is
    // denied.", "The file '/x' already exists."); add what kind of failure it is where the message does not say.
    static string EnvironmentMessage(Exception e) => e switch
    {
        // .NET reports opening a folder as a file as "Access to the path '…' is denied".
        UnauthorizedAccessException when QuotedPath(e.Message) is { } p && Directory.Exists(p) => $"{p} is a folder; expected a file",
        UnauthorizedAccessException => $"permission denied: {e.Message}",
        DllNotFoundException => $"a native library is missing (is the driver installed?): {FirstLine(e.Message)}",
        InsufficientMemoryException when ThrownByUs(e) => e.Message.TrimEnd(),
        OutOfMemoryException or InsufficientMemoryException => "out of memory (the input or the model does not fit in this machine's memory)",
        _ => e.Message.TrimEnd(),
    };

    // Cocona could not bind the command line (its messages name C# types: "requires Nullable`1 value").
    static string BindMessage(Cocona.Command.Binder.ParameterBinderException e) => e.Result switch
    {
        Cocona.Command.Binder.ParameterBinderResult.InsufficientArgument => $"missing argument '{e.Argument?.Name}'; see --help",
        Cocona.Command.Binder.ParameterBinderResult.InsufficientOption => $"missing option '--{e.Option?.Name}'; see --help",
        Cocona.Command.Binder.ParameterBinderResult.InsufficientOptionValue => $"option '--{e.Option?.Name}' needs a value",
        _ when e.Option is { } o => $"option '--{o.Name}': expected {TypeWord(o.OptionType)}",
        _ when e.Argument is { } a => $"argument '{a.Name}': expected {TypeWord(a.ArgumentType)}",
        _ => e.Message,
    };

    static string TypeWord(Type t)
    {
        t = Nullable.GetUnderlyingType(t) ?? t;
        if (t.IsArray) t = t.GetElementType()!;
        return t == typeof(int) || t == typeof(long) || t == typeof(ulong) ? "an integer"
            : t == typeof(float) || t == typeof(double) ? "a number"
            : t == typeof(bool) ? "true or false" : $"a {t.Name}";
    }

    static string? QuotedPath(string message)
    {
        int a = message.IndexOf('\''), b = a < 0 ? -1 : message.IndexOf('\'', a + 1);
        return b > a + 1 ? message[(a + 1)..b] : null;
    }

    static string FirstLine(string s)
    {
        int nl = s.IndexOf('\n');
        return (nl < 0 ? s : s[..nl]).TrimEnd();
    }

    /// <summary>Directory for crash logs: ILGPUTUNE_CRASH_DIR, else the temp folder's ilgpu-tune/.</summary>
    internal static string CrashDir =>
        Environment.GetEnvironmentVariable("ILGPUTUNE_CRASH_DIR") is { Length: > 0 } dir ? dir : Path.Combine(Path.GetTempPath(), "ilgpu-tune");

    static string? WriteCrashLog(Exception e, string[] args, string crashDir)
    {
        try
        {
            Directory.CreateDirectory(crashDir);
            string path = Path.Combine(crashDir, $"crash-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Environment.ProcessId}.log");
            string version = typeof(ErrorBoundary).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "?";
            File.WriteAllText(path,
                $"ilgpu-tune {version}\n" +
                $"time: {DateTime.UtcNow:O}\n" +
                $"command: ilgpu-tune {string.Join(' ', args.Select(Quote))}\n" +
                $"runtime: {RuntimeInformation.FrameworkDescription} on {RuntimeInformation.OSDescription} ({RuntimeInformation.ProcessArchitecture})\n\n" +
                e + "\n");
            return path;
        }
        catch (Exception)
        {
            // No crash log (read-only temp, disk full): the one line still names the failure.
            return null;
        }
    }

    static string Quote(string a) => a.Length > 0 && a.All(c => char.IsLetterOrDigit(c) || "-_./=:,@+".Contains(c)) ? a : $"'{a.Replace("'", "'\\''")}'";
}

/// <summary>Applied to every command class: the command's exceptions go through <see cref="ErrorBoundary"/>.</summary>
[AttributeUsage(AttributeTargets.Class)]
internal sealed class FriendlyErrorsAttribute : Cocona.Filters.CommandFilterAttribute
{
    public override async ValueTask<int> OnCommandExecutionAsync(Cocona.Filters.CoconaCommandExecutingContext ctx, Cocona.Filters.CommandExecutionDelegate next)
    {
        try
        {
            return await next(ctx);
        }
        catch (Exception e)
        {
            return ErrorBoundary.Report(e);
        }
    }
}
