using System.Globalization;

namespace IlgpuTune.Data.Templates.Jinja;

/// <summary>The str and dict methods chat templates call (the immutable sandbox allows no mutating ones).</summary>
static class Methods
{
    static object? Arg(List<object?> a, Dictionary<string, object?> kw, int i, string name, object? dflt = null) =>
        i < a.Count ? a[i] : kw.TryGetValue(name, out var v) ? v : dflt;

    public static Callable? Str(string s, string name) => name switch
    {
        "startswith" or "endswith" => new Callable(name, (a, kw) =>
        {
            var p = Arg(a, kw, 0, "prefix");
            var options = p is List<object?> l ? l.Cast<string>().ToList() : [p as string ?? throw new TemplateException($"{name} needs a string")];
            return options.Any(o => name == "startswith" ? s.StartsWith(o, StringComparison.Ordinal) : s.EndsWith(o, StringComparison.Ordinal));
        }),
        "strip" => new Callable(name, (a, kw) => Py.Strip(s, Arg(a, kw, 0, "chars"), true, true)),
        "lstrip" => new Callable(name, (a, kw) => Py.Strip(s, Arg(a, kw, 0, "chars"), true, false)),
        "rstrip" => new Callable(name, (a, kw) => Py.Strip(s, Arg(a, kw, 0, "chars"), false, true)),
        "split" or "rsplit" => new Callable(name, (a, kw) =>
            Py.Split(s, Arg(a, kw, 0, "sep"), Py.ToLong(Arg(a, kw, 1, "maxsplit", -1L)), name == "rsplit")),
        "splitlines" => new Callable(name, (_, _) => SplitLines(s)),
        "upper" => new Callable(name, (_, _) => s.ToUpperInvariant()),
        "lower" => new Callable(name, (_, _) => s.ToLowerInvariant()),
        "title" => new Callable(name, (_, _) => Builtins.Title(s)),
        "capitalize" => new Callable(name, (_, _) => Builtins.Capitalize(s)),
        "replace" => new Callable(name, (a, kw) => Builtins.Replace(s, Arg(a, kw, 0, "old"), Arg(a, kw, 1, "new"), Arg(a, kw, 2, "count"))),
        "find" => new Callable(name, (a, kw) => (long)s.IndexOf((string)Arg(a, kw, 0, "sub")!, StringComparison.Ordinal)),
        "rfind" => new Callable(name, (a, kw) => (long)s.LastIndexOf((string)Arg(a, kw, 0, "sub")!, StringComparison.Ordinal)),
        "count" => new Callable(name, (a, kw) =>
        {
            string sub = (string)Arg(a, kw, 0, "sub")!;
            return sub.Length == 0 ? Py.Len(s) + 1 : (long)Py.Split(s, sub, -1, false).Count - 1;
        }),
        "join" => new Callable(name, (a, kw) => string.Join(s, Py.Iterate(Arg(a, kw, 0, "iterable"), "join").Select(x =>
            x as string ?? throw new TemplateException($"join expects strings, got {Py.Describe(x)}")))),
        "isdigit" => new Callable(name, (_, _) => s.Length > 0 && s.All(char.IsDigit)),
        "isspace" => new Callable(name, (_, _) => s.Length > 0 && Py.Runes(s).All(Py.IsSpace)),
        _ => null,
    };

    static List<object?> SplitLines(string s)
    {
        var parts = s.Replace("\r\n", "\n").Replace('\r', '\n').Split('\n').Select(x => (object?)x).ToList();
        if ((string?)parts[^1] == "") parts.RemoveAt(parts.Count - 1);
        return parts;
    }

    public static Callable? Dict(Dictionary<string, object?> d, string name) => name switch
    {
        "items" => new Callable(name, (_, _) => d.Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList()),
        "keys" => new Callable(name, (_, _) => d.Keys.Select(k => (object?)k).ToList()),
        "values" => new Callable(name, (_, _) => d.Values.ToList()),
        "get" => new Callable(name, (a, kw) => a.Count > 0 && a[0] is string k && d.TryGetValue(k, out var v) ? v : Arg(a, kw, 1, "default")),
        _ => null,
    };
}

/// <summary>Jinja2's builtin filters, tests and the globals transformers adds (raise_exception, strftime_now).</summary>
static class Builtins
{
    public static Dictionary<string, object?> Globals() => new()
    {
        ["range"] = new Callable("range", (a, _) =>
        {
            long start = 0, stop, step = 1;
            if (a.Count == 1) stop = Py.ToLong(a[0]);
            else if (a.Count is 2 or 3)
            {
                start = Py.ToLong(a[0]);
                stop = Py.ToLong(a[1]);
                if (a.Count == 3) step = Py.ToLong(a[2]);
            }
            else throw new TemplateException("range expects 1 to 3 arguments");
            if (step == 0) throw new TemplateException("range() arg 3 must not be zero");
            var r = new List<object?>();
            for (long i = start; step > 0 ? i < stop : i > stop; i += step) r.Add(i);
            return r;
        }),
        ["namespace"] = new Callable("namespace", (a, kw) =>
        {
            var ns = new Namespace();
            foreach (var x in a)
                if (x is Dictionary<string, object?> d) foreach (var kv in d) ns.Attrs[kv.Key] = kv.Value;
            foreach (var kv in kw) ns.Attrs[kv.Key] = kv.Value;
            return ns;
        }),
        ["dict"] = new Callable("dict", (_, kw) => new Dictionary<string, object?>(kw)),
        ["raise_exception"] = new Callable("raise_exception", (a, _) =>
            throw new TemplateException(a.Count > 0 ? Py.Str(a[0]) : "raise_exception() called")),
        ["strftime_now"] = new Callable("strftime_now", (a, _) => Strftime(DateTime.Now, a.Count > 0 ? Py.Str(a[0]) : "")),
    };

    public static object? Filter(string name, object? v, List<object?> a, Dictionary<string, object?> kw)
    {
        object? Arg(int i, string n, object? dflt = null) => i < a.Count ? a[i] : kw.TryGetValue(n, out var x) ? x : dflt;
        string S(object? x) => x as string ?? Py.Str(x);
        switch (name)
        {
            case "default" or "d":
                return v is Undefined || (Py.Truthy(Arg(1, "boolean", false)) && !Py.Truthy(v)) ? Arg(0, "default_value", "") : v;
            case "length" or "count": return Py.Len(v);
            case "trim": return Py.Strip(S(v), Arg(0, "chars"), true, true);
            case "string": return Py.Str(v);
            case "upper": return S(v).ToUpperInvariant();
            case "lower": return S(v).ToLowerInvariant();
            case "capitalize": return Capitalize(S(v));
            case "title": return Title(S(v));
            case "replace": return Replace(S(v), Arg(0, "old"), Arg(1, "new"), Arg(2, "count"));
            case "tojson":
                {
                    var ind = Arg(0, "indent");
                    return Py.ToJson(v, ind is null ? null : Py.ToLong(ind), Py.Truthy(kw.GetValueOrDefault("sort_keys")));
                }
            case "safe": return v;
            case "escape" or "e":
                return Py.Str(v).Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;");
            case "join":
                {
                    var attr = Arg(1, "attribute");
                    var items = Py.Iterate(v, "join").Select(x => attr is null ? x : Py.GetItem(x, attr));
                    return string.Join(S(Arg(0, "d", "")), items.Select(Py.Str));
                }
            case "first": return Py.Iterate(v, "first").DefaultIfEmpty(new Undefined("first")).First();
            case "last": return Py.Iterate(v, "last").ToList() is { Count: > 0 } seq ? seq[^1] : new Undefined("last");
            case "list": return Py.Iterate(v, "list").ToList();
            case "reverse": return v is string str ? string.Concat(Py.Runes(str).Reverse().Select(char.ConvertFromUtf32)) : Py.Iterate(v, "reverse").Reverse().ToList();
            case "unique":
                {
                    var r = new List<object?>();
                    foreach (var x in Py.Iterate(v, "unique")) if (!r.Any(y => Py.PyEquals(x, y))) r.Add(x);
                    return r;
                }
            case "items": return v is Dictionary<string, object?> d ? Methods.Dict(d, "items")!.Invoke([], []) : v is Undefined ? new List<object?>() : throw new TemplateException($"items expects a dict, got {Py.Describe(v)}");
            case "sort":
                {
                    bool rev = Py.Truthy(Arg(0, "reverse", false));
                    var attr = Arg(2, "attribute");
                    var sorted = Py.Iterate(v, "sort").ToList();
                    object? Key(object? x) => attr is null ? x : Py.GetItem(x, attr);
                    sorted.Sort((x, y) => Py.Compare("<", Key(x), Key(y)) ? -1 : Py.Compare(">", Key(x), Key(y)) ? 1 : 0);
                    if (rev) sorted.Reverse();
                    return sorted;
                }
            case "map":
                {
                    if (kw.TryGetValue("attribute", out var attr))
                        return Py.Iterate(v, "map").Select(x => Py.GetItem(x, attr) is Undefined && kw.TryGetValue("default", out var df) ? df : Py.GetItem(x, attr)).ToList();
                    string f = a.Count > 0 ? S(a[0]) : throw new TemplateException("map needs a filter name or attribute=");
                    return Py.Iterate(v, "map").Select(x => Filter(f, x, a.Skip(1).ToList(), [])).ToList();
                }
            case "select" or "reject":
                {
                    bool keep = name == "select";
                    return Py.Iterate(v, name).Where(x => (a.Count == 0 ? Py.Truthy(x) : Test(S(a[0]), x, a.Skip(1).ToList())) == keep).ToList();
                }
            case "selectattr" or "rejectattr":
                {
                    bool keep = name == "selectattr";
                    var attr = a.Count > 0 ? a[0] : throw new TemplateException($"{name} needs an attribute");
                    return Py.Iterate(v, name).Where(x =>
                    {
                        var av = Py.GetItem(x, attr);
                        return (a.Count == 1 ? Py.Truthy(av) : Test(S(a[1]), av, a.Skip(2).ToList())) == keep;
                    }).ToList();
                }
            case "sum": return Py.Iterate(v, "sum").Aggregate(Arg(1, "start", 0L), (acc, x) => Py.Binary("+", acc, x));
            case "min" or "max":
                {
                    var all = Py.Iterate(v, name).ToList();
                    if (all.Count == 0) return new Undefined(name);
                    return all.Aggregate((x, y) => Py.Compare(name == "min" ? "<" : ">", y, x) ? y : x);
                }
            case "abs": return v switch { long li => (object)Math.Abs(li), double dd => Math.Abs(dd), _ => throw new TemplateException($"abs of {Py.Describe(v)}") };
            case "int":
                return v switch
                {
                    long or bool or double => Py.ToLong(v),
                    string si when long.TryParse(si.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long li) => li,
                    string sf when double.TryParse(sf.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double dd) => (long)dd,
                    _ => Arg(0, "default", 0L),
                };
            case "float":
                return v switch
                {
                    long or bool => (double)Py.ToLong(v),
                    double => v,
                    string sf when double.TryParse(sf.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double dd) => dd,
                    _ => Arg(0, "default", 0.0),
                };
            case "round":
                {
                    int prec = (int)Py.ToLong(Arg(0, "precision", 0L));
                    string method = S(Arg(1, "method", "common"));
                    double x = v is double dd ? dd : Py.ToLong(v);
                    double m = Math.Pow(10, prec);
                    return method switch
                    {
                        "floor" => Math.Floor(x * m) / m,
                        "ceil" => Math.Ceiling(x * m) / m,
                        _ => Math.Round(x, Math.Clamp(prec, 0, 15), MidpointRounding.ToEven),   // Python round(): half to even
                    };
                }
            case "indent":
                {
                    var w = Arg(0, "width", 4L);
                    string pad = w is string ws ? ws : new string(' ', (int)Py.ToLong(w));
                    bool first = Py.Truthy(Arg(1, "first", false)), blank = Py.Truthy(Arg(2, "blank", false));
                    var lines = S(v).Split('\n');
                    for (int i = 0; i < lines.Length; i++)
                        if ((i > 0 || first) && (blank || lines[i].Length > 0)) lines[i] = pad + lines[i];
                    return string.Join('\n', lines);
                }
            case "batch" or "slice" or "groupby" or "format" or "wordcount" or "center" or "truncate" or "urlize" or "xmlattr" or "wordwrap":
                throw new TemplateException($"filter '{name}' is not supported");
            default: throw new TemplateException($"no filter named '{name}'");
        }
    }

    public static bool Test(string name, object? v, List<object?> a)
    {
        object? A0() => a.Count > 0 ? a[0] : throw new TemplateException($"test '{name}' needs an argument");
        return name switch
        {
            "defined" => v is not Undefined,
            "undefined" => v is Undefined,
            "none" => v is null,
            "boolean" => v is bool,
            "true" => v is true,
            "false" => v is false,
            "integer" => v is long,
            "float" => v is double,
            "number" => v is long or double or bool,
            "string" => v is string,
            "mapping" => v is Dictionary<string, object?>,
            "iterable" => v is string or List<object?> or Dictionary<string, object?> or Undefined,
            "sequence" => v is string or List<object?> or Dictionary<string, object?>,
            "callable" => v is Callable,
            "odd" => Py.ToLong(v) % 2 != 0,
            "even" => Py.ToLong(v) % 2 == 0,
            "divisibleby" => Py.ToLong(v) % Py.ToLong(A0()) == 0,
            "eq" or "equalto" or "==" => Py.PyEquals(v, A0()),
            "ne" or "!=" => !Py.PyEquals(v, A0()),
            "lt" or "lessthan" or "<" => Py.Compare("<", v, A0()),
            "le" or "<=" => Py.Compare("<=", v, A0()),
            "gt" or "greaterthan" or ">" => Py.Compare(">", v, A0()),
            "ge" or ">=" => Py.Compare(">=", v, A0()),
            "in" => Py.Contains(A0(), v),
            "sameas" => v is null ? A0() is null : v is bool b ? A0() is bool b2 && b == b2 : ReferenceEquals(v, A0()),
            "lower" => v is string s && s == s.ToLowerInvariant(),
            "upper" => v is string s2 && s2 == s2.ToUpperInvariant(),
            _ => throw new TemplateException($"no test named '{name}'"),
        };
    }

    public static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    public static string Title(string s)
    {
        var c = s.ToCharArray();
        bool prevCased = false;
        for (int i = 0; i < c.Length; i++)
        {
            bool cased = char.IsLetter(c[i]);
            c[i] = cased ? (prevCased ? char.ToLowerInvariant(c[i]) : char.ToUpperInvariant(c[i])) : c[i];
            prevCased = cased;
        }
        return new string(c);
    }

    public static string Replace(string s, object? oldv, object? newv, object? count)
    {
        if (oldv is not string o || newv is not string n) throw new TemplateException("replace needs two strings");
        long max = count is null ? -1 : Py.ToLong(count);
        if (max < 0) return o.Length == 0 ? string.Concat(Py.Runes(s).Select(r => n + char.ConvertFromUtf32(r))) + n : s.Replace(o, n, StringComparison.Ordinal);
        var parts = Py.Split(s, o, max, false);
        return string.Join(n, parts.Cast<string>());
    }

    // The strftime directives date-stamped templates (Llama 3.1+) use.
    static string Strftime(DateTime t, string format)
    {
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length) { sb.Append(format[i]); continue; }
            char f = format[++i];
            sb.Append(f switch
            {
                'd' => t.ToString("dd", CultureInfo.InvariantCulture),
                'm' => t.ToString("MM", CultureInfo.InvariantCulture),
                'Y' => t.ToString("yyyy", CultureInfo.InvariantCulture),
                'y' => t.ToString("yy", CultureInfo.InvariantCulture),
                'b' => t.ToString("MMM", CultureInfo.InvariantCulture),
                'B' => t.ToString("MMMM", CultureInfo.InvariantCulture),
                'H' => t.ToString("HH", CultureInfo.InvariantCulture),
                'M' => t.ToString("mm", CultureInfo.InvariantCulture),
                'S' => t.ToString("ss", CultureInfo.InvariantCulture),
                'a' => t.ToString("ddd", CultureInfo.InvariantCulture),
                'A' => t.ToString("dddd", CultureInfo.InvariantCulture),
                '%' => "%",
                _ => "%" + f,
            });
        }
        return sb.ToString();
    }
}
