using System.Globalization;
using System.Text;

namespace IlgpuTune.Data.Templates.Jinja;

/// <summary>
/// A template error: bad syntax, an undefined operation, a sandbox limit, or raise_exception(); the message names the
/// line where known. A user-input error: the CLI prints its message as one error line.
/// </summary>
public sealed class TemplateException(string message) : Exception(message);

enum TokKind { Name, String, Int, Float, Op, End }

readonly record struct Tok(TokKind Kind, string Text, object? Value, int Line)
{
    public bool Is(string op) => Kind == TokKind.Op && Text == op;
    public bool IsName(string name) => Kind == TokKind.Name && Text == name;
    public override string ToString() => Kind == TokKind.End ? "end of tag" : $"'{Text}'";
}

enum ItemKind { Text, Output, Block }

/// <summary>Template text, a {{ expression }} or a {% statement %} (comments are dropped); Tokens end with an End token.</summary>
sealed record Item(ItemKind Kind, string Text, List<Tok> Tokens, int Line);

/// <summary>
/// Jinja2's lexer as transformers configures it (trim_blocks, lstrip_blocks, keep_trailing_newline off): newlines are
/// normalized to \n and one trailing newline dropped; "-" strips all whitespace on that side; lstrip_blocks removes spaces
/// and tabs before a {% or {# that starts its line (not before {{); trim_blocks drops one \n after %} or #}; "+" opts out.
/// </summary>
static class JinjaLexer
{
    public static List<Item> Lex(string source)
    {
        source = source.Replace("\r\n", "\n").Replace('\r', '\n');
        if (source.EndsWith('\n')) source = source[..^1];
        var items = new List<Item>();
        int pos = 0, line = 1;
        bool lineStarting = true;
        while (pos < source.Length)
        {
            int open = NextTagStart(source, pos);
            if (open < 0)
            {
                items.Add(new Item(ItemKind.Text, source[pos..], [], line));
                break;
            }
            char kind = source[open + 1];
            char sign = open + 2 < source.Length ? source[open + 2] : '\0';
            string text = source[pos..open];
            if (sign == '-') text = text.TrimEnd();
            else if (sign != '+' && kind != '{')
            {
                int l = text.LastIndexOf('\n') + 1;
                if ((l > 0 || lineStarting) && l < text.Length && text.AsSpan(l).IndexOfAnyExcept(" \t") < 0) text = text[..l];
            }
            if (text.Length > 0) items.Add(new Item(ItemKind.Text, text, [], line));
            line += Count(source, pos, open);
            int tagLine = line;
            int start = open + 2 + (sign is '-' or '+' ? 1 : 0);
            int end;          // index just past the closing delimiter
            bool stripAfter, keepNewline;
            List<Tok> tokens = [];
            if (kind == '#')
            {
                int close = source.IndexOf("#}", start, StringComparison.Ordinal);
                if (close < 0) throw new TemplateException($"line {tagLine}: unclosed comment");
                stripAfter = source[close - 1] == '-' && close - 1 >= start;
                keepNewline = source[close - 1] == '+' && close - 1 >= start;
                end = close + 2;
            }
            else
            {
                string closer = kind == '{' ? "}}" : "%}";
                (tokens, end, stripAfter, keepNewline) = Tokenize(source, start, closer, tagLine);
            }
            line += Count(source, open, end);
            pos = end;
            if (stripAfter)
            {
                while (pos < source.Length && char.IsWhiteSpace(source[pos])) pos++;
            }
            else if (kind != '{' && !keepNewline && pos < source.Length && source[pos] == '\n') pos++;
            line += Count(source, end, pos);
            lineStarting = pos > 0 && source[pos - 1] == '\n';
            if (kind != '#') items.Add(new Item(kind == '{' ? ItemKind.Output : ItemKind.Block, "", tokens, tagLine));
        }
        return items;
    }

    static int Count(string s, int from, int to) => s.AsSpan(from, to - from).Count('\n');

    static int NextTagStart(string s, int from)
    {
        for (int i = s.IndexOf('{', from); i >= 0 && i + 1 < s.Length; i = s.IndexOf('{', i + 1))
            if (s[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    static readonly string[] Ops = ["**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "|", ".", ",", ":",
        "(", ")", "[", "]", "{", "}", "<", ">", "="];

    // Tokens up to the closer ("}}" or "%}", optionally preceded by - or +) outside strings and brace nesting.
    static (List<Tok>, int End, bool StripAfter, bool KeepNewline) Tokenize(string s, int i, string closer, int line)
    {
        var toks = new List<Tok>();
        int depth = 0;
        while (true)
        {
            while (i < s.Length && char.IsWhiteSpace(s[i]))
            {
                if (s[i] == '\n') line++;
                i++;
            }
            if (i >= s.Length) throw new TemplateException($"line {line}: missing '{closer}'");
            if (depth == 0)
            {
                if (string.CompareOrdinal(s, i, closer, 0, 2) == 0)
                {
                    toks.Add(new Tok(TokKind.End, "", null, line));
                    return (toks, i + 2, false, false);
                }
                if (s[i] is '-' or '+' && string.CompareOrdinal(s, i + 1, closer, 0, 2) == 0)
                {
                    toks.Add(new Tok(TokKind.End, "", null, line));
                    return (toks, i + 3, s[i] == '-', s[i] == '+');
                }
            }
            char c = s[i];
            if (char.IsLetter(c) || c == '_')
            {
                int j = i + 1;
                while (j < s.Length && (char.IsLetterOrDigit(s[j]) || s[j] == '_')) j++;
                toks.Add(new Tok(TokKind.Name, s[i..j], null, line));
                i = j;
            }
            else if (char.IsAsciiDigit(c))
            {
                int j = i;
                while (j < s.Length && (char.IsAsciiDigit(s[j]) || s[j] == '_')) j++;
                bool isFloat = false;
                if (j + 1 < s.Length && s[j] == '.' && char.IsAsciiDigit(s[j + 1]))
                {
                    isFloat = true;
                    j++;
                    while (j < s.Length && (char.IsAsciiDigit(s[j]) || s[j] == '_')) j++;
                }
                if (j < s.Length && s[j] is 'e' or 'E')
                {
                    int k = j + 1;
                    if (k < s.Length && s[k] is '+' or '-') k++;
                    if (k < s.Length && char.IsAsciiDigit(s[k]))
                    {
                        isFloat = true;
                        j = k;
                        while (j < s.Length && char.IsAsciiDigit(s[j])) j++;
                    }
                }
                string num = s[i..j].Replace("_", "");
                if (isFloat) toks.Add(new Tok(TokKind.Float, num, double.Parse(num, CultureInfo.InvariantCulture), line));
                else if (long.TryParse(num, NumberStyles.None, CultureInfo.InvariantCulture, out long n)) toks.Add(new Tok(TokKind.Int, num, n, line));
                else throw new TemplateException($"line {line}: integer literal {Short(num)} does not fit in 64 bits (the sandbox's integers are 64-bit)");
                i = j;
            }
            else if (c is '\'' or '"')
            {
                var (str, next) = ReadString(s, i, line);
                toks.Add(new Tok(TokKind.String, s[i..next], str, line));
                i = next;
            }
            else
            {
                string? op = Ops.FirstOrDefault(o => string.CompareOrdinal(s, i, o, 0, o.Length) == 0);
                if (op is null) throw new TemplateException($"line {line}: unexpected character '{c}'");
                if (op is "{" or "(" or "[") depth++;
                else if (op is "}" or ")" or "]") depth--;
                toks.Add(new Tok(TokKind.Op, op, null, line));
                i += op.Length;
            }
        }
    }

    static bool IsHex(ReadOnlySpan<char> s) => s.IndexOfAnyExcept("0123456789abcdefABCDEF") < 0;

    static string Short(string s) => s.Length <= 40 ? s : s[..20] + "..." + s[^10..];

    // A Python string literal with its escapes.
    static (string, int) ReadString(string s, int i, int line)
    {
        char q = s[i];
        var sb = new StringBuilder();
        for (int j = i + 1; j < s.Length; j++)
        {
            char c = s[j];
            if (c == q) return (sb.ToString(), j + 1);
            if (c != '\\' || j + 1 >= s.Length)
            {
                sb.Append(c);
                continue;
            }
            char e = s[++j];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case '0': sb.Append('\0'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'v': sb.Append('\v'); break;
                case 'a': sb.Append('\a'); break;
                case '\\' or '\'' or '"': sb.Append(e); break;
                case '\n': break;
                case 'x' or 'u' or 'U':
                    int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                    if (j + n >= s.Length || !IsHex(s.AsSpan(j + 1, n)))
                        throw new TemplateException($"line {line}: truncated \\{e} escape (needs {n} hex digits)");
                    uint cp = uint.Parse(s.AsSpan(j + 1, n), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
                    if (cp > 0x10FFFF) throw new TemplateException($"line {line}: illegal Unicode character \\{e}{s.AsSpan(j + 1, n)} (above U+10FFFF)");
                    if (cp is >= 0xD800 and <= 0xDFFF) sb.Append((char)cp);   // a lone surrogate, as Python's str allows
                    else sb.Append(char.ConvertFromUtf32((int)cp));
                    j += n;
                    break;
                default: sb.Append('\\').Append(e); break;
            }
        }
        throw new TemplateException($"line {line}: unterminated string");
    }
}
