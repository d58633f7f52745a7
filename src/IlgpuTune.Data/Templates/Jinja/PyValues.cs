using System.Globalization;
using System.Text;
using System.Text.Json;

namespace IlgpuTune.Data.Templates.Jinja;

/// <summary>Jinja's default Undefined: renders as "", is falsy, iterates empty, has length 0; most operations on it fail.</summary>
sealed record Undefined(string Name);

/// <summary>A Python tuple: a list that prints as (a, b).</summary>
sealed class PyTuple(IEnumerable<object?> items) : List<object?>(items);

/// <summary>namespace(): the one mutable object templates may assign attributes to.</summary>
sealed class Namespace
{
    public Dictionary<string, object?> Attrs { get; } = [];
}

/// <summary>A global function, filter-like builtin, bound method or macro.</summary>
sealed class Callable(string name, Func<List<object?>, Dictionary<string, object?>, object?> fn)
{
    public string Name => name;
    public object? Invoke(List<object?> args, Dictionary<string, object?> kwargs) => fn(args, kwargs);
}

/// <summary>The loop variable of a for loop.</summary>
sealed class LoopInfo(List<object?> items, int index)
{
    public object? Get(string name) => name switch
    {
        "index" => (long)index + 1,
        "index0" => (long)index,
        "revindex" => (long)(items.Count - index),
        "revindex0" => (long)(items.Count - index - 1),
        "first" => index == 0,
        "last" => index == items.Count - 1,
        "length" => (long)items.Count,
        "depth" => 1L,
        "depth0" => 0L,
        "previtem" => index > 0 ? items[index - 1] : new Undefined("loop.previtem"),
        "nextitem" => index + 1 < items.Count ? items[index + 1] : new Undefined("loop.nextitem"),
        "cycle" => new Callable("loop.cycle", (a, _) => a.Count == 0 ? throw new TemplateException("loop.cycle needs arguments") : a[index % a.Count]),
        _ => new Undefined("loop." + name),
    };
}

/// <summary>
/// Python value semantics for template values: None = null, bool, long (int), double (float), string, List (list and
/// tuple), Dictionary&lt;string, object?&gt; (dict, insertion-ordered), Namespace, Callable, LoopInfo, Undefined.
/// Strings index, slice and measure by code point, as Python's str does.
/// </summary>
static class Py
{
    public static object? FromJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => e.EnumerateObject().ToDictionary(p => p.Name, p => FromJson(p.Value)),
        JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.GetRawText().AsSpan().IndexOfAny(".eE") < 0 && e.TryGetInt64(out long l) ? (object)l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };

    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    public static string Describe(object? v) => v switch
    {
        null => "None",
        Undefined u => $"undefined '{u.Name}'",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        Dictionary<string, object?> => "dict",
        Namespace => "namespace",
        Callable c => $"function '{c.Name}'",
        LoopInfo => "loop",
        _ => v.GetType().Name,
    };

    /// <summary>Python str(): what {{ value }} prints (Undefined prints nothing).</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(v),
    };

    /// <summary>Python repr(), within the sandbox's length and nesting limits (a list may hold one long string many times).</summary>
    public static string Repr(object? v)
    {
        var sb = new StringBuilder();
        ReprInto(sb, v, 0);
        return sb.ToString();
    }

    static void ReprInto(StringBuilder sb, object? v, int depth)
    {
        Sandbox.CheckNesting(depth, "repr");
        switch (v)
        {
            case null: sb.Append("None"); break;
            case bool b: sb.Append(b ? "True" : "False"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(FloatRepr(d)); break;
            case string s: Sandbox.CheckLength(sb.Length + (long)s.Length, "repr"); sb.Append(StrRepr(s)); break;
            case Undefined: break;
            case List<object?> list:
                sb.Append(list is PyTuple ? '(' : '[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0) sb.Append(", ");
                    ReprInto(sb, list[i], depth + 1);
                    Sandbox.CheckLength(sb.Length, "repr");
                }
                sb.Append(list is PyTuple ? (list.Count == 1 ? ",)" : ")") : "]");
                break;
            case Dictionary<string, object?> d:
                sb.Append('{');
                bool first = true;
                foreach (var kv in d)
                {
                    if (!first) sb.Append(", ");
                    first = false;
                    sb.Append(StrRepr(kv.Key)).Append(": ");
                    ReprInto(sb, kv.Value, depth + 1);
                    Sandbox.CheckLength(sb.Length, "repr");
                }
                sb.Append('}');
                break;
            case Namespace ns: sb.Append("<Namespace "); ReprInto(sb, ns.Attrs, depth + 1); sb.Append('>'); break;
            default: sb.Append('<').Append(Describe(v)).Append('>'); break;
        }
    }

    static string StrRepr(string s)
    {
        char q = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder().Append(q);
        foreach (char c in s)
        {
            if (c == q || c == '\\') sb.Append('\\').Append(c);
            else if (c == '\n') sb.Append("\\n");
            else if (c == '\r') sb.Append("\\r");
            else if (c == '\t') sb.Append("\\t");
            else if (c < 0x20 || c == 0x7f) sb.Append($"\\x{(int)c:x2}");
            else sb.Append(c);
        }
        return sb.Append(q).ToString();
    }

    /// <summary>Python repr(float): shortest round-trip digits, fixed notation for 1e-4 ≤ |x| &lt; 1e16, else d.ddde±XX.</summary>
    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        // Shortest round-trip digits from "R"; the decimal exponent is recovered from its form.
        string shortest = Math.Abs(d).ToString("R", CultureInfo.InvariantCulture);
        string digits;
        int exp;
        int e = shortest.IndexOfAny(['E', 'e']);
        string mant = e < 0 ? shortest : shortest[..e];
        int mexp = e < 0 ? 0 : int.Parse(shortest[(e + 1)..], CultureInfo.InvariantCulture);
        int dot = mant.IndexOf('.');
        string intPart = dot < 0 ? mant : mant[..dot], frac = dot < 0 ? "" : mant[(dot + 1)..];
        digits = (intPart + frac).TrimStart('0');
        int lead = (intPart + frac).Length - digits.Length;
        exp = intPart.Length - lead - 1 + mexp;    // exponent of the first significant digit
        digits = digits.TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        string sign = d < 0 ? "-" : "";
        if (exp >= -4 && exp < 16)
        {
            if (exp >= 0)
            {
                string ip = digits.Length > exp + 1 ? digits[..(exp + 1)] : digits.PadRight(exp + 1, '0');
                string fp = digits.Length > exp + 1 ? digits[(exp + 1)..] : "0";
                return sign + ip + "." + fp;
            }
            return sign + "0." + new string('0', -exp - 1) + digits;
        }
        string m = digits.Length == 1 ? digits : digits[0] + "." + digits[1..];
        return sign + m + "e" + (exp < 0 ? "-" : "+") + Math.Abs(exp).ToString("00", CultureInfo.InvariantCulture);
    }

    // ---- strings by code point ----

    public static int[] Runes(string s)
    {
        var r = new List<int>(s.Length);
        foreach (var rune in s.EnumerateRunes()) r.Add(rune.Value);
        return [.. r];
    }

    static string FromRunes(IEnumerable<int> runes)
    {
        var sb = new StringBuilder();
        foreach (int r in runes) sb.Append(char.ConvertFromUtf32(r));
        return sb.ToString();
    }

    public static long Len(object? v) => v switch
    {
        string s => Runes(s).Length,
        List<object?> l => l.Count,
        Dictionary<string, object?> d => d.Count,
        Undefined => 0,
        _ => throw new TemplateException($"object of type {Describe(v)} has no len()"),
    };

    public static IEnumerable<object?> Iterate(object? v, string what) => v switch
    {
        List<object?> l => l,
        Dictionary<string, object?> d => d.Keys,
        string s => Runes(s).Select(r => (object?)char.ConvertFromUtf32(r)),
        Undefined => [],
        _ => throw new TemplateException($"{what}: {Describe(v)} is not iterable"),
    };

    // ---- attribute and item access (Jinja sandbox: attribute first for a.b, item first for a[b]) ----

    public static object? GetAttr(object? obj, string name, int line)
    {
        switch (obj)
        {
            case Undefined u: throw new TemplateException($"line {line}: '{u.Name}' is undefined (reading .{name})");
            case LoopInfo loop: return loop.Get(name);
            case Namespace ns: return ns.Attrs.TryGetValue(name, out var v) ? v : new Undefined(name);
            case Dictionary<string, object?> d:
                return (object?)Methods.Dict(d, name) ?? (d.TryGetValue(name, out var dv) ? dv : new Undefined(name));
            case string s: return (object?)Methods.Str(s, name) ?? new Undefined(name);
            default: return new Undefined(name);
        }
    }

    public static object? GetItem(object? obj, object? key)
    {
        switch (obj)
        {
            case Undefined u: throw new TemplateException($"'{u.Name}' is undefined (reading [{Repr(key)}])");
            case Dictionary<string, object?> d when key is string k:
                return d.TryGetValue(k, out var v) ? v : (object?)Methods.Dict(d, k) ?? new Undefined(k);
            case List<object?> l when key is long or bool:
                {
                    long i = ToLong(key);
                    if (i < 0) i += l.Count;
                    return i >= 0 && i < l.Count ? l[(int)i] : new Undefined($"[{key}]");
                }
            case string s when key is long or bool:
                {
                    var r = Runes(s);
                    long i = ToLong(key);
                    if (i < 0) i += r.Length;
                    return i >= 0 && i < r.Length ? char.ConvertFromUtf32(r[i]) : new Undefined($"[{key}]");
                }
            case string s when key is string name: return (object?)Methods.Str(s, name) ?? new Undefined(name);
            case Namespace ns when key is string n: return ns.Attrs.TryGetValue(n, out var nv) ? nv : new Undefined(n);
            case LoopInfo loop when key is string ln: return loop.Get(ln);
            default: return new Undefined($"[{Repr(key)}]");
        }
    }

    public static object? Slice(object? obj, object? start, object? stop, object? step)
    {
        long st = step is null ? 1 : ToLong(step);
        if (st == 0) throw new TemplateException("slice step cannot be zero");
        switch (obj)
        {
            case List<object?> l: return SliceIndices(l.Count, start, stop, st).Select(i => l[i]).ToList();
            case string s:
                {
                    var r = Runes(s);
                    return FromRunes(SliceIndices(r.Length, start, stop, st).Select(i => r[i]));
                }
            default: throw new TemplateException($"{Describe(obj)} cannot be sliced");
        }
    }

    static IEnumerable<int> SliceIndices(int n, object? start, object? stop, long step)
    {
        long Clamp(object? v, long dflt, long lo, long hi)
        {
            if (v is null) return dflt;
            long x = ToLong(v);
            if (x < 0) x += n;
            return Math.Clamp(x, lo, hi);
        }
        if (step > 0)
        {
            long a = Clamp(start, 0, 0, n), b = Clamp(stop, n, 0, n);
            for (long i = a; i < b; i = b - i <= step ? b : i + step) yield return (int)i;
        }
        else
        {
            long a = Clamp(start, n - 1, -1, n - 1), b = Clamp(stop, -1, -1, n - 1);
            for (long i = a; i > b; i = i - b <= -step ? b : i + step) yield return (int)i;
        }
    }

    // ---- numbers and operators ----

    static bool IsNum(object? v) => v is long or double or bool;

    public static long ToLong(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        double d when double.IsNaN(d) => throw new TemplateException("cannot convert float nan to integer"),
        double d when d >= -9.2233720368547758E18 && d < 9.2233720368547758E18 => (long)d,
        double d => throw new TemplateException($"float {FloatRepr(d)} does not fit in a 64-bit integer"),
        _ => throw new TemplateException($"expected an integer, got {Describe(v)}"),
    };

    static double ToDouble(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        double d => d,
        _ => throw new TemplateException($"expected a number, got {Describe(v)}"),
    };

    public static object? Binary(string op, object? a, object? b)
    {
        if (op == "~") return Concat(Str(a), Str(b));
        if (a is Undefined ua) throw new TemplateException($"'{ua.Name}' is undefined (operand of {op})");
        if (b is Undefined ub) throw new TemplateException($"'{ub.Name}' is undefined (operand of {op})");
        switch (op)
        {
            case "+" when a is string sa && b is string sb: return Concat(sa, sb);
            case "+" when a is List<object?> la && b is List<object?> lb:
                Sandbox.CheckLength((long)la.Count + lb.Count, "list concatenation");
                return la.Concat(lb).ToList();
            case "*" when a is string s && b is long or bool:
                {
                    long n = Math.Max(0, ToLong(b));
                    Sandbox.CheckLength(Repeated(s.Length, n), "string repetition");
                    return new StringBuilder(s.Length * (int)n).Insert(0, s, (int)n).ToString();
                }
            case "*" when a is List<object?> l && b is long or bool:
                {
                    long n = Math.Max(0, ToLong(b));
                    Sandbox.CheckLength(Repeated(l.Count, n), "list repetition");
                    return Enumerable.Repeat(l, (int)n).SelectMany(x => x).ToList();
                }
        }
        if (!IsNum(a) || !IsNum(b))
            throw new TemplateException($"unsupported operand types for {op}: {Describe(a)} and {Describe(b)}");
        bool ints = a is not double && b is not double;
        try
        {
            return ints ? IntBinary(op, ToLong(a), ToLong(b)) : FloatBinary(op, ToDouble(a), ToDouble(b));
        }
        catch (OverflowException)
        {
            throw new TemplateException($"integer overflow: {Repr(a)} {op} {Repr(b)} does not fit in 64 bits (the sandbox's integers are 64-bit)");
        }
    }

    // length * count, saturated so the limit check sees an over-long result instead of a wrapped one.
    public static long Repeated(long length, long count) => length == 0 || count == 0 ? 0 : count > long.MaxValue / length ? long.MaxValue : length * count;

    public static string Concat(string a, string b)
    {
        Sandbox.CheckLength((long)a.Length + b.Length, "string concatenation");
        return a + b;
    }

    static object IntBinary(string op, long x, long y)
    {
        switch (op)
        {
            case "+": return checked(x + y);
            case "-": return checked(x - y);
            case "*": return checked(x * y);
            case "/":
                if (y == 0) throw new TemplateException("division by zero");
                return (double)x / y;
            case "//":
                if (y == 0) throw new TemplateException("integer division by zero");
                return FloorDiv(x, y);
            case "%":
                if (y == 0) throw new TemplateException("modulo by zero");
                return y == -1 ? 0L : x - y * FloorDiv(x, y);
            case "**":
                if (y < 0) return x == 0 ? throw new TemplateException("0.0 cannot be raised to a negative power") : Math.Pow(x, y);
                long r = 1, bas = x;
                for (long e = y; e > 0; e >>= 1)   // by squaring: 2 ** 9999999999 fails at once instead of looping
                {
                    if ((e & 1) != 0) r = checked(r * bas);
                    if (e > 1) bas = checked(bas * bas);
                }
                return r;
            default: throw new TemplateException($"unknown operator {op}");
        }
    }

    static object FloatBinary(string op, double x, double y)
    {
        switch (op)
        {
            case "+": return x + y;
            case "-": return x - y;
            case "*": return x * y;
            case "/":
                if (y == 0) throw new TemplateException("float division by zero");
                return x / y;
            case "//":
                if (y == 0) throw new TemplateException("float floor division by zero");
                return Math.Floor(x / y);
            case "%":
                if (y == 0) throw new TemplateException("float modulo by zero");
                return x - y * Math.Floor(x / y);
            case "**":
                if (x == 0 && y < 0) throw new TemplateException("0.0 cannot be raised to a negative power");
                return Math.Pow(x, y);
            default: throw new TemplateException($"unknown operator {op}");
        }
    }

    static long FloorDiv(long a, long b)
    {
        long q = checked(a / b);
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
    }

    public static bool Compare(string op, object? a, object? b)
    {
        switch (op)
        {
            case "==": return PyEquals(a, b);
            case "!=": return !PyEquals(a, b);
            case "in": return Contains(b, a);
            case "not in": return !Contains(b, a);
        }
        int c;
        if (IsNum(a) && IsNum(b)) c = a is double || b is double ? ToDouble(a).CompareTo(ToDouble(b)) : ToLong(a).CompareTo(ToLong(b));
        else if (a is string sa && b is string sb) c = string.CompareOrdinal(sa, sb);
        else throw new TemplateException($"'{op}' not supported between {Describe(a)} and {Describe(b)}");
        return op switch { "<" => c < 0, ">" => c > 0, "<=" => c <= 0, ">=" => c >= 0, _ => throw new TemplateException($"unknown comparison {op}") };
    }

    public static bool PyEquals(object? a, object? b) => PyEquals(a, b, 0);

    static bool PyEquals(object? a, object? b, int depth)
    {
        if (a is null || b is null) return a is null && b is null;
        if (ReferenceEquals(a, b) && a is not double) return true;   // Python compares container items by identity first
        Sandbox.CheckNesting(depth, "comparison");
        if (IsNum(a) && IsNum(b))
            return a is double || b is double ? ToDouble(a) == ToDouble(b) : ToLong(a) == ToLong(b);
        return (a, b) switch
        {
            (string x, string y) => x == y,
            (List<object?> x, List<object?> y) => x.Count == y.Count && x.Zip(y).All(p => PyEquals(p.First, p.Second, depth + 1)),
            (Dictionary<string, object?> x, Dictionary<string, object?> y) =>
                x.Count == y.Count && x.All(kv => y.TryGetValue(kv.Key, out var v) && PyEquals(kv.Value, v, depth + 1)),
            (Undefined, Undefined) => true,
            _ => ReferenceEquals(a, b),
        };
    }

    public static bool Contains(object? container, object? item) => container switch
    {
        string s when item is string sub => s.Contains(sub, StringComparison.Ordinal),
        string => throw new TemplateException($"'in <string>' requires a string, got {Describe(item)}"),
        List<object?> l => l.Any(x => PyEquals(x, item)),
        Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
        Undefined => false,
        _ => throw new TemplateException($"argument of type {Describe(container)} is not iterable"),
    };

    // ---- Python str helpers ----

    public static bool IsSpace(int c) => c < 0x10000 ? char.IsWhiteSpace((char)c) || c is >= 0x1C and <= 0x1F : false;

    public static string Strip(string s, object? chars, bool left, bool right)
    {
        var r = Runes(s);
        Func<int, bool> strip = chars switch
        {
            null or Undefined => IsSpace,
            string cs => Runes(cs).Contains,
            _ => throw new TemplateException($"strip arg must be None or str, got {Describe(chars)}"),
        };
        int a = 0, b = r.Length;
        if (left) while (a < b && strip(r[a])) a++;
        if (right) while (b > a && strip(r[b - 1])) b--;
        return FromRunes(r[a..b]);
    }

    public static List<object?> Split(string s, object? sep, long maxSplit, bool fromRight)
    {
        var parts = new List<string>();
        if (sep is null or Undefined)
        {
            var r = Runes(s);
            int i = 0, n = r.Length, splits = 0;
            if (!fromRight)
            {
                while (true)
                {
                    while (i < n && IsSpace(r[i])) i++;
                    if (i >= n) break;
                    if (maxSplit >= 0 && splits == maxSplit)
                    {
                        parts.Add(FromRunes(r[i..]));
                        break;
                    }
                    int j = i;
                    while (j < n && !IsSpace(r[j])) j++;
                    parts.Add(FromRunes(r[i..j]));
                    splits++;
                    i = j;
                }
                return [.. parts];
            }
            int k = n;
            while (true)
            {
                while (k > 0 && IsSpace(r[k - 1])) k--;
                if (k <= 0) break;
                if (maxSplit >= 0 && splits == maxSplit)
                {
                    parts.Add(FromRunes(r[..k]));
                    break;
                }
                int j = k;
                while (j > 0 && !IsSpace(r[j - 1])) j--;
                parts.Add(FromRunes(r[j..k]));
                splits++;
                k = j;
            }
            parts.Reverse();
            return [.. parts];
        }
        if (sep is not string sp) throw new TemplateException($"split separator must be a string, got {Describe(sep)}");
        if (sp.Length == 0) throw new TemplateException("empty separator");
        if (!fromRight)
        {
            int at = 0, count = 0;
            while (maxSplit < 0 || count < maxSplit)
            {
                int hit = s.IndexOf(sp, at, StringComparison.Ordinal);
                if (hit < 0) break;
                parts.Add(s[at..hit]);
                at = hit + sp.Length;
                count++;
            }
            parts.Add(s[at..]);
            return [.. parts];
        }
        int endAt = s.Length, rc = 0;
        while (maxSplit < 0 || rc < maxSplit)
        {
            int hit = endAt - sp.Length < 0 ? -1 : s.LastIndexOf(sp, endAt - 1, endAt, StringComparison.Ordinal);
            if (hit < 0 || hit + sp.Length > endAt) break;
            parts.Add(s[(hit + sp.Length)..endAt]);
            endAt = hit;
            rc++;
        }
        parts.Add(s[..endAt]);
        parts.Reverse();
        return [.. parts];
    }

    // ---- json.dumps(ensure_ascii=False), as transformers' tojson filter calls it ----

    public static string ToJson(object? v, long? indent, bool sortKeys)
    {
        var sb = new StringBuilder();
        WriteJson(sb, v, indent is < 0 ? 0 : indent, sortKeys, 0);   // json.dumps: a negative indent indents by nothing
        return sb.ToString();
    }

    static void WriteJson(StringBuilder sb, object? v, long? indent, bool sortKeys, int level)
    {
        Sandbox.CheckNesting(level, "tojson");
        Sandbox.CheckLength(sb.Length, "tojson");
        void Newline(int lvl)
        {
            if (indent is null) return;
            Sandbox.CheckLength(sb.Length + 1 + Repeated(indent.Value, lvl), "tojson");
            sb.Append('\n').Append(' ', (int)(indent.Value * lvl));
        }
        string itemSep = indent is null ? ", " : ",";
        switch (v)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : FloatRepr(d));
                break;
            case string s: Sandbox.CheckLength(sb.Length + (long)s.Length, "tojson"); JsonString(sb, s); break;
            case List<object?> list:
                if (list.Count == 0) { sb.Append("[]"); break; }
                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0) sb.Append(itemSep);
                    Newline(level + 1);
                    WriteJson(sb, list[i], indent, sortKeys, level + 1);
                }
                Newline(level);
                sb.Append(']');
                break;
            case Dictionary<string, object?> dict:
                if (dict.Count == 0) { sb.Append("{}"); break; }
                sb.Append('{');
                var entries = sortKeys ? dict.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList() : dict.ToList();
                for (int i = 0; i < entries.Count; i++)
                {
                    if (i > 0) sb.Append(itemSep);
                    Newline(level + 1);
                    JsonString(sb, entries[i].Key);
                    sb.Append(": ");
                    WriteJson(sb, entries[i].Value, indent, sortKeys, level + 1);
                }
                Newline(level);
                sb.Append('}');
                break;
            default: throw new TemplateException($"Object of type {Describe(v)} is not JSON serializable");
        }
    }

    static void JsonString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20) sb.Append($"\\u{(int)c:x4}");
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
