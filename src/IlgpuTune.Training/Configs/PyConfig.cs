// XTuner v0.1 Python configs, read and never executed: the mmengine dict-config subset that XTuner's built-in configs and
// tutorials are written in. Statements: imports (bind symbols), NAME = / += / -= / *= / /= expr, `if cond:` blocks with
// elif/else, docstrings. Expressions: literals, names, attributes, calls with keyword arguments (dict(...) builds a dict; any
// other callee gives the lazy {type: callee, ...} dict mmengine would build), lists, tuples, {...} dicts, arithmetic,
// comparisons, and/or/not, `a if c else b`. Anything else is an error naming file:line.
using System.Globalization;
using System.Text;

namespace IlgpuTune.Training.Configs;

/// <summary>A value of the config; Line is where it was written (1-based).</summary>
public abstract record PyValue(int Line);
public sealed record PyNone(int Line) : PyValue(Line);
public sealed record PyBool(bool Value, int Line) : PyValue(Line);
public sealed record PyInt(long Value, int Line) : PyValue(Line);
public sealed record PyFloat(double Value, int Line) : PyValue(Line);
public sealed record PyStr(string Value, int Line) : PyValue(Line);
public sealed record PyList(List<PyValue> Items, bool IsTuple, int Line) : PyValue(Line);
/// <summary>A dict with string keys in insertion order (dict(...) or {...}, or a lazy call {type: callee, ...}).</summary>
public sealed record PyDict(OrderedDictionary<string, PyValue> Items, int Line) : PyValue(Line)
{
    public PyValue? Get(string key) => Items.TryGetValue(key, out var v) ? v : null;
}
/// <summary>An imported name or an attribute of one, by its full dotted name (torch.float16, xtuner.utils.PROMPT_TEMPLATE.qwen_chat).</summary>
public sealed record PySymbol(string Name, int Line) : PyValue(Line)
{
    /// <summary>The last dotted component (AdamW for torch.optim.AdamW).</summary>
    public string Short => Name[(Name.LastIndexOf('.') + 1)..];
}

public sealed class PyConfig
{
    public required string Source { get; init; }
    /// <summary>Top-level names in assignment order (imports excluded).</summary>
    public required OrderedDictionary<string, PyValue> Globals { get; init; }

    public static PyConfig Load(string path)
    {
        if (!File.Exists(path)) throw new ConfigException($"{path}: config file not found");
        return Parse(File.ReadAllText(path), path);
    }

    public static PyConfig Parse(string text, string source) => new PyParser(PyLexer.Tokenize(text, source), source).Run();

    /// <summary>Python's repr-like spelling of a value, for messages and for writing configs.</summary>
    public static string Repr(PyValue v) => v switch
    {
        PyNone => "None",
        PyBool b => b.Value ? "True" : "False",
        PyInt i => i.Value.ToString(CultureInfo.InvariantCulture),
        PyFloat f => FloatRepr(f.Value),
        PyStr s => StrRepr(s.Value),
        PyList l => l.IsTuple ? $"({string.Join(", ", l.Items.Select(Repr))}{(l.Items.Count == 1 ? "," : "")})" : $"[{string.Join(", ", l.Items.Select(Repr))}]",
        PyDict d => $"dict({string.Join(", ", d.Items.Select(kv => $"{kv.Key}={Repr(kv.Value)}"))})",
        PySymbol s => s.Name,
        _ => "?",
    };

    public static string FloatRepr(double d)
    {
        string r = d.ToString("R", CultureInfo.InvariantCulture).Replace("E-0", "e-").Replace("E+0", "e+").Replace("E", "e");
        return r.Contains('.') || r.Contains('e') || r.Contains("Infinity") || r.Contains("NaN") ? r : r + ".0";
    }

    public static string StrRepr(string s)
    {
        var sb = new StringBuilder("'");
        foreach (char c in s)
            sb.Append(c switch { '\\' => "\\\\", '\'' => "\\'", '\n' => "\\n", '\r' => "\\r", '\t' => "\\t", _ => c.ToString() });
        return sb.Append('\'').ToString();
    }
}

enum Tok { Name, Number, String, Op, Newline, Indent, Dedent, End }

readonly record struct Token(Tok Type, string Text, int Line, object? Value = null);

static class PyLexer
{
    static readonly string[] s_ops =
        ["**=", "//=", "...", "**", "//", "==", "!=", "<=", ">=", "+=", "-=", "*=", "/=", "%=", "->", ":=",
         "+", "-", "*", "/", "%", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ":", ".", ";", "@", "|", "&", "^", "~"];

    public static List<Token> Tokenize(string text, string source)
    {
        var toks = new List<Token>();
        var indents = new Stack<int>([0]);
        int i = 0, line = 1, depth = 0;
        bool lineStart = true;
        Exception Err(string m) => new ConfigException($"{source}:{line}: {m}");
        while (i < text.Length)
        {
            if (lineStart && depth == 0)
            {
                int col = 0;
                while (i < text.Length && (text[i] == ' ' || text[i] == '\t')) { col += text[i] == '\t' ? 8 - col % 8 : 1; i++; }
                if (i >= text.Length) break;
                if (text[i] is '\n' or '\r' or '#') { lineStart = SkipToLineEnd(text, ref i, ref line); continue; }
                if (col > indents.Peek()) { indents.Push(col); toks.Add(new(Tok.Indent, "", line)); }
                while (col < indents.Peek())
                {
                    indents.Pop();
                    toks.Add(new(Tok.Dedent, "", line));
                    if (col > indents.Peek()) throw Err("unindent does not match any outer indentation level");
                }
                lineStart = false;
            }
            char c = text[i];
            if (c is ' ' or '\t' or '\f') { i++; continue; }
            if (c == '#') { while (i < text.Length && text[i] != '\n') i++; continue; }
            if (c is '\r' or '\n')
            {
                if (c == '\r' && i + 1 < text.Length && text[i + 1] == '\n') i++;
                i++;
                if (depth == 0 && toks.Count > 0 && toks[^1].Type is not (Tok.Newline or Tok.Indent or Tok.Dedent))
                    toks.Add(new(Tok.Newline, "", line));
                line++;
                lineStart = depth == 0;
                continue;
            }
            if (c == '\\' && i + 1 < text.Length && text[i + 1] is '\n' or '\r')
            {
                i++;
                if (text[i] == '\r' && i + 1 < text.Length && text[i + 1] == '\n') i++;
                i++;
                line++;
                continue;
            }
            int start = i, startLine = line;
            if (char.IsLetter(c) || c == '_')
            {
                while (i < text.Length && (char.IsLetterOrDigit(text[i]) || text[i] == '_')) i++;
                string word = text[start..i];
                if (i < text.Length && text[i] is '\'' or '"' && word.ToLowerInvariant() is "r" or "u" or "b" or "f" or "rb" or "br" or "fr" or "rf")
                {
                    if (word.Contains('f', StringComparison.OrdinalIgnoreCase)) throw Err("f-strings are outside the config subset (write the text out)");
                    if (word.Contains('b', StringComparison.OrdinalIgnoreCase)) throw Err("bytes literals are outside the config subset");
                    toks.Add(new(Tok.String, text[start..i], startLine, ReadString(text, ref i, ref line, raw: word.Contains('r', StringComparison.OrdinalIgnoreCase), Err)));
                    continue;
                }
                toks.Add(new(Tok.Name, word, line));
                continue;
            }
            if (char.IsDigit(c) || (c == '.' && i + 1 < text.Length && char.IsDigit(text[i + 1])))
            {
                toks.Add(ReadNumber(text, ref i, line, Err));
                continue;
            }
            if (c is '\'' or '"')
            {
                toks.Add(new(Tok.String, "", startLine, ReadString(text, ref i, ref line, raw: false, Err)));
                continue;
            }
            string? op = s_ops.FirstOrDefault(o => string.CompareOrdinal(text, i, o, 0, o.Length) == 0);
            if (op is null) throw Err($"unexpected character '{c}'");
            if (op is "(" or "[" or "{") depth++;
            if (op is ")" or "]" or "}") depth = Math.Max(0, depth - 1);
            toks.Add(new(Tok.Op, op, line));
            i += op.Length;
        }
        if (depth > 0) throw Err("unclosed bracket at the end of the file");
        if (toks.Count > 0 && toks[^1].Type != Tok.Newline) toks.Add(new(Tok.Newline, "", line));
        while (indents.Count > 1) { indents.Pop(); toks.Add(new(Tok.Dedent, "", line)); }
        toks.Add(new(Tok.End, "", line));
        return toks;
    }

    static bool SkipToLineEnd(string text, ref int i, ref int line)
    {
        while (i < text.Length && text[i] != '\n') i++;
        if (i < text.Length) { i++; line++; }
        return true;
    }

    static Token ReadNumber(string text, ref int i, int line, Func<string, Exception> err)
    {
        int start = i;
        if (text[i] == '0' && i + 1 < text.Length && text[i + 1] is 'x' or 'X' or 'o' or 'O' or 'b' or 'B')
        {
            int radix = char.ToLowerInvariant(text[i + 1]) switch { 'x' => 16, 'o' => 8, _ => 2 };
            i += 2;
            int s = i;
            while (i < text.Length && (char.IsAsciiHexDigit(text[i]) || text[i] == '_')) i++;
            return new(Tok.Number, text[start..i], line, Convert.ToInt64(text[s..i].Replace("_", ""), radix));
        }
        bool isFloat = false;
        while (i < text.Length && (char.IsDigit(text[i]) || text[i] == '_')) i++;
        if (i < text.Length && text[i] == '.') { isFloat = true; i++; while (i < text.Length && (char.IsDigit(text[i]) || text[i] == '_')) i++; }
        if (i < text.Length && text[i] is 'e' or 'E')
        {
            int save = i++;
            if (i < text.Length && text[i] is '+' or '-') i++;
            if (i < text.Length && char.IsDigit(text[i])) { isFloat = true; while (i < text.Length && char.IsDigit(text[i])) i++; }
            else i = save;
        }
        if (i < text.Length && text[i] is 'j' or 'J') throw err("complex numbers are outside the config subset");
        string t = text[start..i].Replace("_", "");
        if (isFloat) return new(Tok.Number, t, line, double.Parse(t, NumberStyles.Float, CultureInfo.InvariantCulture));
        return long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out long v) ? new(Tok.Number, t, line, v)
            : throw err($"integer {t} is too large");
    }

    static string ReadString(string text, ref int i, ref int line, bool raw, Func<string, Exception> err)
    {
        char q = text[i];
        bool triple = i + 2 < text.Length && text[i + 1] == q && text[i + 2] == q;
        i += triple ? 3 : 1;
        var sb = new StringBuilder();
        while (true)
        {
            if (i >= text.Length) throw err("unterminated string");
            char c = text[i];
            if (c == q && (!triple || (i + 2 < text.Length && text[i + 1] == q && text[i + 2] == q)))
            {
                i += triple ? 3 : 1;
                return sb.ToString();
            }
            if (c == '\n')
            {
                if (!triple) throw err("unterminated string (end of line)");
                line++;
            }
            if (c == '\\' && i + 1 < text.Length)
            {
                char n = text[i + 1];
                if (raw) { sb.Append(c).Append(n); i += 2; if (n == '\n') line++; continue; }
                i += 2;
                switch (n)
                {
                    case 'n': sb.Append('\n'); break;
                    case 't': sb.Append('\t'); break;
                    case 'r': sb.Append('\r'); break;
                    case '0': sb.Append('\0'); break;
                    case '\\': sb.Append('\\'); break;
                    case '\'': sb.Append('\''); break;
                    case '"': sb.Append('"'); break;
                    case '\n': line++; break;
                    case 'u' when i + 4 <= text.Length:
                        sb.Append((char)Convert.ToInt32(text.Substring(i, 4), 16)); i += 4; break;
                    case 'x' when i + 2 <= text.Length:
                        sb.Append((char)Convert.ToInt32(text.Substring(i, 2), 16)); i += 2; break;
                    default: sb.Append('\\').Append(n); break;
                }
                continue;
            }
            sb.Append(c);
            i++;
        }
    }
}

sealed class PyParser(List<Token> toks, string source)
{
    int _p;
    readonly OrderedDictionary<string, PyValue> _globals = new();
    readonly Dictionary<string, PyValue> _scope = new(); // globals and imported symbols

    Token Peek => toks[_p];
    Token Next() => toks[_p++];
    bool IsOp(string op) => Peek.Type == Tok.Op && Peek.Text == op;
    bool IsName(string name) => Peek.Type == Tok.Name && Peek.Text == name;
    ConfigException Err(int line, string m) => new($"{source}:{line}: {m}");

    Token Expect(string op)
    {
        if (!IsOp(op)) throw Err(Peek.Line, $"expected '{op}', got {Describe(Peek)}");
        return Next();
    }

    static string Describe(Token t) => t.Type switch
    {
        Tok.Newline => "end of line", Tok.End => "end of file", Tok.Indent => "an indented block", Tok.Dedent => "end of a block",
        Tok.String => "a string", _ => $"'{t.Text}'",
    };

    public PyConfig Run()
    {
        while (Peek.Type != Tok.End) Statement(execute: true);
        return new PyConfig { Source = source, Globals = _globals };
    }

    void Statement(bool execute)
    {
        var t = Peek;
        if (t.Type == Tok.Newline) { Next(); return; }
        if (t.Type == Tok.Indent) throw Err(t.Line, "unexpected indent");
        if (t.Type == Tok.Name)
            switch (t.Text)
            {
                case "import": Import(execute); return;
                case "from": FromImport(execute); return;
                case "if": If(execute); return;
                case "pass": Next(); EndOfStatement(); return;
                case "def" or "class" or "for" or "while" or "with" or "try" or "lambda" or "return" or "del" or "global" or "assert" or "raise":
                    throw Err(t.Line, $"'{t.Text}' is outside the config subset ilgpu-tune reads (assignments, imports, if, dict(...))");
            }
        // docstrings and other bare string expressions
        if (t.Type == Tok.String)
        {
            Expr();
            EndOfStatement();
            return;
        }
        if (t.Type == Tok.Name && toks[_p + 1].Type == Tok.Op && toks[_p + 1].Text is "=" or "+=" or "-=" or "*=" or "/=" or "//=")
        {
            string name = Next().Text;
            string op = Next().Text;
            var value = Expr();
            if (IsOp(",")) throw Err(t.Line, "tuple assignment is outside the config subset (one name per line)");
            if (IsOp("=")) throw Err(t.Line, "chained assignment is outside the config subset");
            EndOfStatement();
            if (!execute) return;
            if (op != "=")
            {
                var old = Lookup(name, t.Line);
                value = Binary(op[..^1], old, value, t.Line);
            }
            if (name == "_base_") throw Err(t.Line, "_base_ config inheritance is not supported; copy the base config's values into this file");
            _scope[name] = value;
            _globals[name] = value;
            return;
        }
        throw Err(t.Line, t.Type == Tok.Name && toks[_p + 1] is { Type: Tok.Op, Text: "." or "[" }
            ? "assignment to an attribute or an item is outside the config subset (assign the whole dict)"
            : $"a statement starting with {Describe(t)} is outside the config subset (NAME = value, imports, if)");
    }

    void EndOfStatement()
    {
        if (IsOp(";")) throw Err(Peek.Line, "';' is outside the config subset (one statement per line)");
        if (Peek.Type is not (Tok.Newline or Tok.End or Tok.Dedent)) throw Err(Peek.Line, $"unexpected {Describe(Peek)}");
        if (Peek.Type == Tok.Newline) Next();
    }

    string DottedName()
    {
        var sb = new StringBuilder();
        while (IsOp(".")) { Next(); sb.Append('.'); }
        if (Peek.Type != Tok.Name) throw Err(Peek.Line, $"expected a module name, got {Describe(Peek)}");
        sb.Append(Next().Text);
        while (IsOp(".")) { Next(); sb.Append('.').Append(Next().Text); }
        return sb.ToString();
    }

    void Import(bool execute)
    {
        Next();
        do
        {
            string module = DottedName();
            string bind = module.Split('.')[0];
            string target = bind;
            if (IsName("as")) { Next(); bind = Next().Text; target = module; }
            if (execute) _scope[bind] = new PySymbol(target, Peek.Line);
        } while (IsOp(",") && Next().Type == Tok.Op);
        EndOfStatement();
    }

    void FromImport(bool execute)
    {
        int line = Next().Line;
        string module = DottedName();
        if (module.StartsWith('.')) throw Err(line, "relative imports (mmengine base configs) are outside the config subset");
        if (!IsName("import")) throw Err(Peek.Line, "expected 'import'");
        Next();
        bool paren = IsOp("(");
        if (paren) Next();
        if (IsOp("*")) throw Err(line, "'import *' is outside the config subset (name what you import)");
        while (true)
        {
            if (paren && IsOp(")")) break;
            if (Peek.Type != Tok.Name) throw Err(Peek.Line, $"expected a name to import, got {Describe(Peek)}");
            string name = Next().Text, bind = name;
            if (IsName("as")) { Next(); bind = Next().Text; }
            if (execute) _scope[bind] = new PySymbol(module + "." + name, line);
            if (!IsOp(",")) break;
            Next();
        }
        if (paren) Expect(")");
        EndOfStatement();
    }

    void If(bool execute)
    {
        bool taken = false;
        while (true)
        {
            var kw = Next(); // if / elif
            var cond = Expr();
            bool run = execute && !taken && Truthy(cond, kw.Line);
            Block(run);
            taken |= run;
            if (IsName("elif")) continue;
            if (IsName("else"))
            {
                Next();
                Block(execute && !taken);
            }
            return;
        }
    }

    void Block(bool execute)
    {
        Expect(":");
        if (Peek.Type != Tok.Newline) { Statement(execute); return; }
        Next();
        if (Peek.Type != Tok.Indent) throw Err(Peek.Line, "expected an indented block");
        Next();
        while (Peek.Type != Tok.Dedent && Peek.Type != Tok.End) Statement(execute);
        if (Peek.Type == Tok.Dedent) Next();
    }

    PyValue Lookup(string name, int line) => _scope.TryGetValue(name, out var v) ? v : name switch
    {
        "True" => new PyBool(true, line),
        "False" => new PyBool(false, line),
        "None" => new PyNone(line),
        "dict" or "list" or "tuple" or "int" or "float" or "str" or "bool" => new PySymbol("builtins." + name, line),
        _ => throw Err(line, $"name '{name}' is not defined (assign or import it above)"),
    };

    // ---- expressions ----

    PyValue Expr()
    {
        var v = OrExpr();
        if (IsName("if"))
        {
            int line = Next().Line;
            var cond = OrExpr();
            if (!IsName("else")) throw Err(Peek.Line, "expected 'else' in a conditional expression");
            Next();
            var other = Expr();
            return Truthy(cond, line) ? v : other;
        }
        if (IsName("lambda")) throw Err(Peek.Line, "lambda is outside the config subset");
        return v;
    }

    PyValue OrExpr()
    {
        var v = AndExpr();
        while (IsName("or")) { int l = Next().Line; var r = AndExpr(); v = Truthy(v, l) ? v : r; }
        return v;
    }

    PyValue AndExpr()
    {
        var v = NotExpr();
        while (IsName("and")) { int l = Next().Line; var r = NotExpr(); v = Truthy(v, l) ? r : v; }
        return v;
    }

    PyValue NotExpr()
    {
        if (IsName("not")) { int l = Next().Line; return new PyBool(!Truthy(NotExpr(), l), l); }
        return Comparison();
    }

    PyValue Comparison()
    {
        var v = Arith();
        while (Peek.Type == Tok.Op && Peek.Text is "==" or "!=" or "<" or ">" or "<=" or ">=" || IsName("is") || IsName("in") || IsName("not"))
        {
            var t = Next();
            string op = t.Text;
            if (op == "is" && IsName("not")) { Next(); op = "is not"; }
            else if (op == "not") { if (!IsName("in")) throw Err(t.Line, "expected 'in' after 'not'"); Next(); op = "not in"; }
            var r = Arith();
            v = new PyBool(Compare(op, v, r, t.Line), t.Line);
        }
        return v;
    }

    PyValue Arith()
    {
        var v = Term();
        while (IsOp("+") || IsOp("-")) { var t = Next(); v = Binary(t.Text, v, Term(), t.Line); }
        return v;
    }

    PyValue Term()
    {
        var v = Unary();
        while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) { var t = Next(); v = Binary(t.Text, v, Unary(), t.Line); }
        return v;
    }

    PyValue Unary()
    {
        if (IsOp("-") || IsOp("+"))
        {
            var t = Next();
            var v = Unary();
            if (t.Text == "+") return v;
            return v switch
            {
                PyInt i => new PyInt(-i.Value, t.Line),
                PyFloat f => new PyFloat(-f.Value, t.Line),
                _ => throw Err(t.Line, $"cannot negate {PyConfig.Repr(v)}"),
            };
        }
        return Power();
    }

    PyValue Power()
    {
        var v = Postfix();
        if (IsOp("**")) { var t = Next(); v = Binary("**", v, Unary(), t.Line); }
        return v;
    }

    PyValue Postfix()
    {
        var v = Atom();
        while (true)
        {
            if (IsOp("."))
            {
                Next();
                var name = Next();
                if (name.Type != Tok.Name) throw Err(name.Line, "expected an attribute name after '.'");
                v = v is PySymbol s ? new PySymbol(s.Name + "." + name.Text, name.Line)
                    : throw Err(name.Line, $"attribute '.{name.Text}' of {PyConfig.Repr(v)} is outside the config subset");
            }
            else if (IsOp("(")) v = Call(v);
            else if (IsOp("["))
            {
                int line = Next().Line;
                var index = Expr();
                Expect("]");
                v = (v, index) switch
                {
                    (PyList l, PyInt i) when i.Value >= -l.Items.Count && i.Value < l.Items.Count => l.Items[(int)(i.Value < 0 ? i.Value + l.Items.Count : i.Value)],
                    (PyDict d, PyStr k) when d.Items.ContainsKey(k.Value) => d.Items[k.Value],
                    _ => throw Err(line, $"cannot index {PyConfig.Repr(v)} with {PyConfig.Repr(index)}"),
                };
            }
            else return v;
        }
    }

    PyValue Call(PyValue callee)
    {
        int line = Expect("(").Line;
        var kwargs = new OrderedDictionary<string, PyValue>();
        var positional = new List<PyValue>();
        while (!IsOp(")"))
        {
            if (IsOp("*") || IsOp("**")) throw Err(Peek.Line, "*args / **kwargs are outside the config subset");
            if (Peek.Type == Tok.Name && toks[_p + 1] is { Type: Tok.Op, Text: "=" })
            {
                string k = Next().Text;
                Next();
                if (kwargs.ContainsKey(k)) throw Err(line, $"keyword argument '{k}' repeated");
                kwargs[k] = Expr();
            }
            else
            {
                if (kwargs.Count > 0) throw Err(Peek.Line, "positional argument after keyword arguments");
                positional.Add(Expr());
            }
            if (!IsOp(",")) break;
            Next();
        }
        Expect(")");
        string name = callee is PySymbol s ? s.Name : throw Err(line, $"{PyConfig.Repr(callee)} is not callable");
        switch (name)
        {
            case "builtins.dict":
                if (positional.Count > 1 || positional.Count == 1 && positional[0] is not PyDict)
                    throw Err(line, "dict(...) takes keyword arguments (or one dict)");
                var items = positional.Count == 1 ? new OrderedDictionary<string, PyValue>(((PyDict)positional[0]).Items) : new();
                foreach (var (k, v) in kwargs) items[k] = v;
                return new PyDict(items, line);
            case "builtins.list" or "builtins.tuple" when positional.Count <= 1 && kwargs.Count == 0:
                return new PyList(positional.Count == 0 ? [] : positional[0] is PyList l ? [.. l.Items]
                    : throw Err(line, "list()/tuple() of a non-sequence"), name == "builtins.tuple", line);
            case "builtins.int" or "builtins.float" when positional.Count == 1 && kwargs.Count == 0:
                return (name, positional[0]) switch
                {
                    ("builtins.int", PyInt i) => i,
                    ("builtins.int", PyFloat f) => new PyInt((long)Math.Truncate(f.Value), line),
                    ("builtins.float", PyInt i) => new PyFloat(i.Value, line),
                    ("builtins.float", PyFloat f) => f,
                    _ => throw Err(line, $"{name[9..]}({PyConfig.Repr(positional[0])}) is outside the config subset"),
                };
        }
        if (positional.Count > 0)
            throw Err(line, $"{name}(...) with positional arguments is outside the config subset (use keyword arguments, as mmengine configs do)");
        // mmengine's lazy form: f(a=1) in a config builds the same thing as dict(type=f, a=1).
        var lazy = new OrderedDictionary<string, PyValue> { ["type"] = callee };
        foreach (var (k, v) in kwargs) lazy[k] = v;
        return new PyDict(lazy, line);
    }

    PyValue Atom()
    {
        var t = Next();
        switch (t.Type)
        {
            case Tok.Number: return t.Value is long l ? new PyInt(l, t.Line) : new PyFloat((double)t.Value!, t.Line);
            case Tok.String:
                var sb = new StringBuilder((string)t.Value!);
                while (Peek.Type == Tok.String) sb.Append((string)Next().Value!); // 'a' 'b' concatenation
                return new PyStr(sb.ToString(), t.Line);
            case Tok.Name:
                if (t.Text is "lambda" or "yield" or "await") throw Err(t.Line, $"'{t.Text}' is outside the config subset");
                return Lookup(t.Text, t.Line);
            case Tok.Op when t.Text == "(":
            {
                if (IsOp(")")) { Next(); return new PyList([], true, t.Line); }
                var first = Expr();
                if (IsOp(")")) { Next(); return first; }
                var items = new List<PyValue> { first };
                while (IsOp(",")) { Next(); if (IsOp(")")) break; items.Add(Expr()); }
                Expect(")");
                return new PyList(items, true, t.Line);
            }
            case Tok.Op when t.Text == "[":
            {
                var items = new List<PyValue>();
                while (!IsOp("]"))
                {
                    items.Add(Expr());
                    if (IsName("for")) throw Err(Peek.Line, "comprehensions are outside the config subset");
                    if (!IsOp(",")) break;
                    Next();
                }
                Expect("]");
                return new PyList(items, false, t.Line);
            }
            case Tok.Op when t.Text == "{":
            {
                var items = new OrderedDictionary<string, PyValue>();
                while (!IsOp("}"))
                {
                    var k = Expr();
                    if (!IsOp(":")) throw Err(Peek.Line, "sets are outside the config subset (expected 'key: value')");
                    Next();
                    if (k is not PyStr ks) throw Err(k.Line, $"dict keys must be strings, got {PyConfig.Repr(k)}");
                    items[ks.Value] = Expr();
                    if (IsName("for")) throw Err(Peek.Line, "comprehensions are outside the config subset");
                    if (!IsOp(",")) break;
                    Next();
                }
                Expect("}");
                return new PyDict(items, t.Line);
            }
        }
        throw Err(t.Line, $"unexpected {Describe(t)}");
    }

    // ---- Python semantics for the operators the subset allows ----

    bool Truthy(PyValue v, int line) => v switch
    {
        PyNone => false,
        PyBool b => b.Value,
        PyInt i => i.Value != 0,
        PyFloat f => f.Value != 0,
        PyStr s => s.Value.Length > 0,
        PyList l => l.Items.Count > 0,
        PyDict d => d.Items.Count > 0,
        _ => throw Err(line, $"the truth of {PyConfig.Repr(v)} is not known without running Python"),
    };

    static double? Num(PyValue v) => v switch { PyInt i => i.Value, PyFloat f => f.Value, PyBool b => b.Value ? 1 : 0, _ => null };

    bool Compare(string op, PyValue a, PyValue b, int line)
    {
        switch (op)
        {
            case "==": return Equal(a, b);
            case "!=": return !Equal(a, b);
            case "is": return a is PyNone && b is PyNone || a is PyBool x && b is PyBool y && x.Value == y.Value || ReferenceEquals(a, b);
            case "is not": return !Compare("is", a, b, line);
            case "in" or "not in":
                bool found = b switch
                {
                    PyList l => l.Items.Any(i => Equal(i, a)),
                    PyDict d when a is PyStr k => d.Items.ContainsKey(k.Value),
                    PyStr s when a is PyStr sub => s.Value.Contains(sub.Value, StringComparison.Ordinal),
                    _ => throw Err(line, $"'in' on {PyConfig.Repr(b)} is outside the config subset"),
                };
                return found == (op == "in");
        }
        int c = (Num(a), Num(b)) is (double x2, double y2) ? x2.CompareTo(y2)
            : a is PyStr sa && b is PyStr sb ? string.CompareOrdinal(sa.Value, sb.Value)
            : throw Err(line, $"cannot compare {PyConfig.Repr(a)} {op} {PyConfig.Repr(b)}");
        return op switch { "<" => c < 0, ">" => c > 0, "<=" => c <= 0, _ => c >= 0 };
    }

    static bool Equal(PyValue a, PyValue b) => (a, b) switch
    {
        (PyNone, PyNone) => true,
        (PyStr x, PyStr y) => x.Value == y.Value,
        (PySymbol x, PySymbol y) => x.Name == y.Name,
        (PyList x, PyList y) => x.Items.Count == y.Items.Count && x.Items.Zip(y.Items).All(p => Equal(p.First, p.Second)),
        _ when Num(a) is double x && Num(b) is double y => x == y,
        _ => false,
    };

    PyValue Binary(string op, PyValue a, PyValue b, int line)
    {
        switch (op, a, b)
        {
            case ("+", PyStr x, PyStr y): return new PyStr(x.Value + y.Value, line);
            case ("+", PyList x, PyList y) when x.IsTuple == y.IsTuple: return new PyList([.. x.Items, .. y.Items], x.IsTuple, line);
            case ("*", PyList x, PyInt n): return new PyList([.. Enumerable.Repeat(x.Items, (int)Math.Max(0, n.Value)).SelectMany(i => i)], x.IsTuple, line);
            case ("*", PyStr x, PyInt n): return new PyStr(string.Concat(Enumerable.Repeat(x.Value, (int)Math.Max(0, n.Value))), line);
        }
        bool ints = a is PyInt or PyBool && b is PyInt or PyBool;
        if (Num(a) is not double x1 || Num(b) is not double y1 || a is PyBool && b is PyBool && op is not ("+" or "-" or "*"))
            throw Err(line, $"{PyConfig.Repr(a)} {op} {PyConfig.Repr(b)} is outside the config subset (numbers, strings and lists only)");
        if (ints)
        {
            long xi = (long)x1, yi = (long)y1;
            switch (op)
            {
                case "+": return new PyInt(xi + yi, line);
                case "-": return new PyInt(xi - yi, line);
                case "*": return new PyInt(xi * yi, line);
                case "//" or "%" when yi == 0: throw Err(line, "division by zero");
                case "//": return new PyInt((long)Math.Floor((double)xi / yi), line);
                case "%": return new PyInt(((xi % yi) + yi) % yi, line);
                case "**" when yi >= 0: return new PyInt((long)Math.Pow(xi, yi), line);
            }
        }
        if (op is "/" or "//" or "%" && y1 == 0) throw Err(line, "division by zero");
        return new PyFloat(op switch
        {
            "+" => x1 + y1,
            "-" => x1 - y1,
            "*" => x1 * y1,
            "/" => x1 / y1,
            "//" => Math.Floor(x1 / y1),
            "%" => x1 - y1 * Math.Floor(x1 / y1),
            "**" => Math.Pow(x1, y1),
            _ => throw Err(line, $"operator {op} is outside the config subset"),
        }, line);
    }
}
