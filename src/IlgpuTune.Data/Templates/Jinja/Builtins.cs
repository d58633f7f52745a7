using System.Globalization;

namespace IlgpuTune.Data.Templates.Jinja;

/// <summary>The str and dict methods chat templates call (the immutable sandbox allows no mutating ones).</summary>
static class Methods
{
    static object? Arg(List<object?> a, Dictionary<string, object?> kw, int i, string name, object? dflt = null) =>
        i < a.Count ? a[i] : kw.TryGetValue(name, out var v) ? v : dflt;

    static string StrArg(List<object?> a, Dictionary<string, object?> kw, int i, string name, string method) =>
        Arg(a, kw, i, name) as string ?? throw new TemplateException($"str.{method}() needs a string argument '{name}', got {Py.Describe(Arg(a, kw, i, name))}");

    public static Callable? Str(string s, string name) => name switch
    {
        "startswith" or "endswith" => new Callable(name, (a, kw) =>
        {
            var p = Arg(a, kw, 0, "prefix");
            var options = p is List<object?> l
                ? l.Select(x => x as string ?? throw new TemplateException($"{name}: a tuple of prefixes must hold only strings, got {Py.Describe(x)}")).ToList()
                : [p as string ?? throw new TemplateException($"{name} needs a string, got {Py.Describe(p)}")];
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
        "find" => new Callable(name, (a, kw) => CodePoints(s, s.IndexOf(StrArg(a, kw, 0, "sub", name), StringComparison.Ordinal))),
        "rfind" => new Callable(name, (a, kw) => CodePoints(s, s.LastIndexOf(StrArg(a, kw, 0, "sub", name), StringComparison.Ordinal))),
        "count" => new Callable(name, (a, kw) =>
        {
            string sub = StrArg(a, kw, 0, "sub", name);
            return sub.Length == 0 ? Py.Len(s) + 1 : (long)Py.Split(s, sub, -1, false).Count - 1;
        }),
        "join" => new Callable(name, (a, kw) => Builtins.Join(s, Py.Iterate(Arg(a, kw, 0, "iterable"), "join").Select(x =>
            x as string ?? throw new TemplateException($"join expects strings, got {Py.Describe(x)}")))),
        "isdigit" => new Callable(name, (_, _) => s.Length > 0 && s.All(char.IsDigit)),
        "isspace" => new Callable(name, (_, _) => s.Length > 0 && Py.Runes(s).All(Py.IsSpace)),
        _ => null,
    };

    // A UTF-16 index as Python's code-point index (-1 stays -1).
    static long CodePoints(string s, int utf16) => utf16 < 0 ? -1 : Py.Len(s[..utf16]);

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
            Int128 span = step > 0 ? (Int128)stop - start : (Int128)start - stop;
            Int128 count = span <= 0 ? 0 : (span + Int128.Abs(step) - 1) / Int128.Abs(step);
            if (count > TemplateLimits.MaxRange)
                throw new TemplateException($"range too big: {count} items; the sandbox allows at most {TemplateLimits.MaxRange:N0}");
            var r = new List<object?>((int)count);
            for (long k = 0; k < (long)count; k++) r.Add(start + k * step);
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

    public static object? Filter(string name, object? v, List<object?> a, Dictionary<string, object?> kw, Sandbox box)
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
                Sandbox.CheckLength(6L * Py.Str(v).Length, "escape");
                return Py.Str(v).Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;");
            case "join":
                {
                    var attr = Arg(1, "attribute");
                    var items = Py.Iterate(v, "join").Select(x => attr is null ? x : Py.GetItem(x, attr));
                    return Join(S(Arg(0, "d", "")), items.Select(Py.Str));
                }
            case "first": return Py.Iterate(v, "first").DefaultIfEmpty(new Undefined("first")).First();
            case "last": return Py.Iterate(v, "last").ToList() is { Count: > 0 } seq ? seq[^1] : new Undefined("last");
            case "list": return Py.Iterate(v, "list").ToList();
            case "reverse": return v is string str ? string.Concat(Py.Runes(str).Reverse().Select(char.ConvertFromUtf32)) : Py.Iterate(v, "reverse").Reverse().ToList();
            case "unique":
                {
                    var r = new List<object?>();
                    foreach (var x in Py.Iterate(v, "unique"))
                    {
                        box.Tick();
                        if (!r.Any(y => Py.PyEquals(x, y))) r.Add(x);
                    }
                    return r;
                }
            case "items": return v is Dictionary<string, object?> d ? Methods.Dict(d, "items")!.Invoke([], []) : v is Undefined ? new List<object?>() : throw new TemplateException($"items expects a dict, got {Py.Describe(v)}");
            case "sort":
                {
                    bool rev = Py.Truthy(Arg(0, "reverse", false));
                    var attr = Arg(2, "attribute");
                    var items = Py.Iterate(v, "sort").ToList();
                    object? Key(object? x) => attr is null ? x : Py.GetItem(x, attr);
                    // Python's sort is stable, reverse included (equal items keep their order).
                    return MergeSort(items, (x, y) =>
                    {
                        box.Tick();
                        bool less = rev ? Py.Compare("<", Key(y), Key(x)) : Py.Compare("<", Key(x), Key(y));
                        return less ? -1 : (rev ? Py.Compare("<", Key(x), Key(y)) : Py.Compare("<", Key(y), Key(x))) ? 1 : 0;
                    });
                }
            case "map":
                {
                    if (kw.TryGetValue("attribute", out var attr))
                        return Py.Iterate(v, "map").Select(x => Py.GetItem(x, attr) is Undefined && kw.TryGetValue("default", out var df) ? df : Py.GetItem(x, attr)).ToList();
                    string f = a.Count > 0 ? S(a[0]) : throw new TemplateException("map needs a filter name or attribute=");
                    return Py.Iterate(v, "map").Select(x => Filter(f, x, a.Skip(1).ToList(), [], box)).ToList();
                }
            case "select" or "reject":
                {
                    bool keep = name == "select";
                    return Py.Iterate(v, name).Where(x => (a.Count == 0 ? Py.Truthy(x) : Test(S(a[0]), x, a.Skip(1).ToList(), box)) == keep).ToList();
                }
            case "selectattr" or "rejectattr":
                {
                    bool keep = name == "selectattr";
                    var attr = a.Count > 0 ? a[0] : throw new TemplateException($"{name} needs an attribute");
                    return Py.Iterate(v, name).Where(x =>
                    {
                        var av = Py.GetItem(x, attr);
                        return (a.Count == 1 ? Py.Truthy(av) : Test(S(a[1]), av, a.Skip(2).ToList(), box)) == keep;
                    }).ToList();
                }
            case "sum": return Py.Iterate(v, "sum").Aggregate(Arg(1, "start", 0L), (acc, x) => { box.Tick(); return Py.Binary("+", acc, x); });
            case "min" or "max":
                {
                    var all = Py.Iterate(v, name).ToList();
                    if (all.Count == 0) return new Undefined(name);
                    return all.Aggregate((x, y) => Py.Compare(name == "min" ? "<" : ">", y, x) ? y : x);
                }
            case "abs":
                return v switch
                {
                    long.MinValue => throw new TemplateException("integer overflow: abs(-2**63) does not fit in 64 bits"),
                    long li => (object)Math.Abs(li),
                    double dd => Math.Abs(dd),
                    bool bb => bb ? 1L : 0L,
                    _ => throw new TemplateException($"bad operand type for abs(): {Py.Describe(v)}"),
                };
            case "int":
                return v switch
                {
                    long or bool or double => Py.ToLong(v),
                    string si when long.TryParse(si.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long li) => li,
                    string sf when double.TryParse(sf.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double dd) && !double.IsNaN(dd) => Py.ToLong(dd),
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
                    int prec = (int)Math.Clamp(Py.ToLong(Arg(0, "precision", 0L)), -400, 400);
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
                    long padLength = w is string ws0 ? ws0.Length : Math.Max(0, Py.ToLong(w));   // ' ' * -1 == ''
                    bool first = Py.Truthy(Arg(1, "first", false)), blank = Py.Truthy(Arg(2, "blank", false));
                    var lines = S(v).Split('\n');
                    Sandbox.CheckLength(S(v).Length + Py.Repeated(padLength, lines.Length), "indent");
                    string pad = w is string ws ? ws : new string(' ', (int)padLength);
                    for (int i = 0; i < lines.Length; i++)
                        if ((i > 0 || first) && (blank || lines[i].Length > 0)) lines[i] = pad + lines[i];
                    return string.Join('\n', lines);
                }
            case "batch" or "slice" or "groupby" or "format" or "wordcount" or "center" or "truncate" or "urlize" or "xmlattr" or "wordwrap":
                throw new TemplateException($"filter '{name}' is not supported");
            default: throw new TemplateException($"no filter named '{name}'");
        }
    }

    public static bool Test(string name, object? v, List<object?> a, Sandbox box)
    {
        box.Tick();
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
            "divisibleby" => Py.ToLong(A0()) switch
            {
                0 => throw new TemplateException("divisibleby(0): integer modulo by zero"),
                -1 => true,
                long d => Py.ToLong(v) % d == 0,
            },
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


    /// <summary>sep.join(items), refused before it is built when it would pass the sandbox's length limit.</summary>
    public static string Join(string sep, IEnumerable<string> items)
    {
        var list = items.ToList();
        long total = list.Sum(x => (long)x.Length) + Py.Repeated(sep.Length, Math.Max(0, list.Count - 1));
        Sandbox.CheckLength(total, "join");
        return string.Join(sep, list);
    }

    // Stable merge sort that lets the comparison's TemplateException through (List.Sort wraps it and is unstable).
    static List<object?> MergeSort(List<object?> items, Func<object?, object?, int> compare)
    {
        if (items.Count <= 1) return items;
        int mid = items.Count / 2;
        var left = MergeSort(items.GetRange(0, mid), compare);
        var right = MergeSort(items.GetRange(mid, items.Count - mid), compare);
        var r = new List<object?>(items.Count);
        int i = 0, j = 0;
        while (i < left.Count && j < right.Count) r.Add(compare(right[j], left[i]) < 0 ? right[j++] : left[i++]);
        while (i < left.Count) r.Add(left[i++]);
        while (j < right.Count) r.Add(right[j++]);
        return r;
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
        if (o.Length == 0)
        {
            var runes = Py.Runes(s);
            long inserts = max < 0 ? runes.Length + 1 : Math.Min(max, runes.Length + 1);
            Sandbox.CheckLength(s.Length + Py.Repeated(n.Length, inserts), "replace");
            var sb = new System.Text.StringBuilder();
            for (int i = 0; i < runes.Length; i++)
            {
                if (i < inserts) sb.Append(n);
                sb.Append(char.ConvertFromUtf32(runes[i]));
            }
            if (inserts > runes.Length) sb.Append(n);
            return sb.ToString();
        }
        var parts = Py.Split(s, o, max, false);
        return Join(n, parts.Cast<string>());
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
