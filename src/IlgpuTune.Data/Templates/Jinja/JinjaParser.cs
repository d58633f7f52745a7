namespace IlgpuTune.Data.Templates.Jinja;

/// <summary>
/// Recursive-descent parser with Jinja2's precedence: a if b else c, or, and, not, comparisons (in, not in), + -, ~,
/// * / // %, **, unary -, then postfix (.attr, [i], [a:b:c], call) and filters/tests (| f, is t) on the operand.
/// Statements: if/elif/else, for (tuple targets, inline if, else), set (name, tuple, ns.attr, block), macro,
/// break/continue, generation (rendered as its body).
/// </summary>
sealed class JinjaParser
{
    readonly List<Item> _items;
    int _item;
    List<Tok> _toks = [];
    int _pos;
    int _depth;   // nesting of blocks and sub-expressions, bounded so a hostile template cannot overflow the stack

    JinjaParser(List<Item> items) => _items = items;

    public static List<Node> Parse(string source)
    {
        var p = new JinjaParser(JinjaLexer.Lex(source));
        var body = p.ParseBody([], out string? end);
        if (end is not null) throw new TemplateException($"unexpected '{{% {end} %}}'");
        return body;
    }

    // Statements until one of the end keywords; the block tag that ended the body is left current (its tokens loaded).
    List<Node> ParseBody(string[] ends, out string? endedBy)
    {
        Enter();
        try
        {
            return ParseBodyCore(ends, out endedBy);
        }
        finally
        {
            _depth--;
        }
    }

    void Enter()
    {
        if (++_depth > TemplateLimits.MaxDepth || !System.Runtime.CompilerServices.RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw new TemplateException($"line {(_toks.Count > 0 ? Peek().Line : _item > 0 ? _items[_item - 1].Line : 1)}: the template nests blocks or expressions deeper than {TemplateLimits.MaxDepth} levels");
    }

    List<Node> ParseBodyCore(string[] ends, out string? endedBy)
    {
        var body = new List<Node>();
        while (_item < _items.Count)
        {
            var it = _items[_item++];
            switch (it.Kind)
            {
                case ItemKind.Text:
                    body.Add(new TextNode(it.Text));
                    break;
                case ItemKind.Output:
                    Load(it);
                    var e = Expression();
                    Expect(TokKind.End);
                    body.Add(new OutputNode(e));
                    break;
                default:
                    Load(it);
                    var kw = Next();
                    if (kw.Kind != TokKind.Name) throw Error(kw, "expected a statement name");
                    if (ends.Contains(kw.Text))
                    {
                        endedBy = kw.Text;
                        return body;
                    }
                    body.Add(Statement(kw));
                    break;
            }
        }
        if (ends.Length > 0) throw new TemplateException($"missing '{{% {ends[^1]} %}}' at the end of the template");
        endedBy = null;
        return body;
    }

    void Load(Item it)
    {
        _toks = it.Tokens;
        _pos = 0;
    }

    Node Statement(Tok kw)
    {
        switch (kw.Text)
        {
            case "if": return If();
            case "for": return For();
            case "set": return Set();
            case "macro": return Macro();
            case "break": Expect(TokKind.End); return new BreakNode();
            case "continue": Expect(TokKind.End); return new ContinueNode();
            case "generation":
                {
                    Expect(TokKind.End);
                    var body = ParseBody(["endgeneration"], out _);
                    Expect(TokKind.End);
                    return new BlockNode(body);
                }
            default: throw Error(kw, $"unknown statement '{kw.Text}'");
        }
    }

    Node If()
    {
        var branches = new List<(Expr, List<Node>)>();
        List<Node>? otherwise = null;
        var cond = Expression();
        Expect(TokKind.End);
        while (true)
        {
            var body = ParseBody(["elif", "else", "endif"], out string? end);
            if (cond is not null) branches.Add((cond, body));
            else otherwise = body;
            if (end == "endif")
            {
                Expect(TokKind.End);
                return new IfNode(branches, otherwise);
            }
            if (otherwise is not null) throw Error(Peek(), "'elif' or 'else' after 'else'");
            if (end == "elif")
            {
                cond = Expression();
                Expect(TokKind.End);
            }
            else
            {
                Expect(TokKind.End);
                cond = null;
            }
        }
    }

    Node For()
    {
        var targets = new List<string> { Name() };
        while (Accept(",")) targets.Add(Name());
        if (!Next().IsName("in")) throw Error(_toks[_pos - 1], "expected 'in'");
        var iter = TupleOrExpression(withCondition: false);
        Expr? filter = null;
        if (Peek().IsName("if"))
        {
            Next();
            filter = Expression(withCondition: false);
        }
        Expect(TokKind.End);
        var body = ParseBody(["else", "endfor"], out string? end);
        List<Node>? otherwise = null;
        if (end == "else")
        {
            Expect(TokKind.End);
            otherwise = ParseBody(["endfor"], out _);
        }
        Expect(TokKind.End);
        return new ForNode(targets, iter, filter, body, otherwise);
    }

    Node Set()
    {
        var first = Next();
        if (first.Kind != TokKind.Name) throw Error(first, "expected a name after 'set'");
        if (Accept("."))
        {
            string attr = Name();
            ExpectOp("=");
            var v = Expression();
            Expect(TokKind.End);
            return new SetAttrNode(first.Text, attr, v);
        }
        var names = new List<string> { first.Text };
        while (Accept(",")) names.Add(Name());
        if (Accept("="))
        {
            var v = TupleOrExpression(withCondition: true);
            Expect(TokKind.End);
            return new SetNode(names, v);
        }
        if (names.Count != 1) throw Error(Peek(), "expected '='");
        var filters = new List<(string, List<Expr>, List<(string, Expr)>)>();
        while (Accept("|")) filters.Add(FilterCall());
        Expect(TokKind.End);
        var body = ParseBody(["endset"], out _);
        Expect(TokKind.End);
        return new SetBlockNode(first.Text, body, filters);
    }

    Node Macro()
    {
        string name = Name();
        ExpectOp("(");
        var ps = new List<(string, Expr?)>();
        while (!Accept(")"))
        {
            if (ps.Count > 0) ExpectOp(",");
            string p = Name();
            ps.Add((p, Accept("=") ? Expression() : null));
        }
        Expect(TokKind.End);
        var body = ParseBody(["endmacro"], out _);
        Expect(TokKind.End);
        return new MacroNode(name, ps, body);
    }

    // ---- expressions ----

    // Jinja's parse_tuple without parentheses, as in "set a, b = 1, 2".
    Expr TupleOrExpression(bool withCondition)
    {
        var e = Expression(withCondition);
        if (!Peek().Is(",")) return e;
        var items = new List<Expr> { e };
        while (Accept(","))
        {
            if (Peek().Kind == TokKind.End || Peek().IsName("if")) break;
            items.Add(Expression(withCondition));
        }
        return new ListExpr(items, tuple: true);
    }

    Expr Expression(bool withCondition = true)
    {
        Enter();
        try
        {
            return ExpressionCore(withCondition);
        }
        finally
        {
            _depth--;
        }
    }

    Expr ExpressionCore(bool withCondition)
    {
        var e = Or();
        while (withCondition && Peek().IsName("if"))
        {
            Next();
            var cond = Or();
            Expr? otherwise = null;
            if (Peek().IsName("else"))
            {
                Next();
                otherwise = Expression();
            }
            e = new CondExpr(cond, e, otherwise);
        }
        return e;
    }

    Expr Or()
    {
        var e = And();
        while (Peek().IsName("or")) { Next(); e = new OrExpr(e, And()); }
        return e;
    }

    Expr And()
    {
        var e = Not();
        while (Peek().IsName("and")) { Next(); e = new AndExpr(e, Not()); }
        return e;
    }

    Expr Not()
    {
        if (!Peek().IsName("not")) return Compare();
        Next();
        Enter();
        try
        {
            return new NotExpr(Not());
        }
        finally
        {
            _depth--;
        }
    }

    Expr Compare()
    {
        var e = Math1();
        var ops = new List<(string, Expr)>();
        while (true)
        {
            var t = Peek();
            if (t.Kind == TokKind.Op && t.Text is "==" or "!=" or "<" or ">" or "<=" or ">=") { Next(); ops.Add((t.Text, Math1())); }
            else if (t.IsName("in")) { Next(); ops.Add(("in", Math1())); }
            else if (t.IsName("not") && PeekAt(1).IsName("in")) { Next(); Next(); ops.Add(("not in", Math1())); }
            else break;
        }
        return ops.Count == 0 ? e : new CompareExpr(e, ops);
    }

    Expr Math1()
    {
        var e = Concat();
        while (Peek().Kind == TokKind.Op && Peek().Text is "+" or "-") e = new BinExpr(Next().Text, e, Concat());
        return e;
    }

    Expr Concat()
    {
        var e = Math2();
        while (Peek().Is("~")) { Next(); e = new BinExpr("~", e, Math2()); }
        return e;
    }

    Expr Math2()
    {
        var e = Pow();
        while (Peek().Kind == TokKind.Op && Peek().Text is "*" or "/" or "//" or "%") e = new BinExpr(Next().Text, e, Pow());
        return e;
    }

    Expr Pow()
    {
        var e = Unary(true);
        while (Peek().Is("**")) { Next(); e = new BinExpr("**", e, Unary(true)); }
        return e;
    }

    Expr Unary(bool withFilter)
    {
        Enter();
        try
        {
            return UnaryCore(withFilter);
        }
        finally
        {
            _depth--;
        }
    }

    Expr UnaryCore(bool withFilter)
    {
        Expr e;
        if (Peek().Is("-")) { Next(); e = new NegExpr(Unary(false)); }
        else if (Peek().Is("+")) { Next(); e = Unary(false); }
        else e = Primary();
        e = Postfix(e);
        return withFilter ? FilterExpr(e) : e;
    }

    Expr Primary()
    {
        var t = Next();
        switch (t.Kind)
        {
            case TokKind.Name:
                return t.Text switch
                {
                    "true" or "True" => new ConstExpr(true),
                    "false" or "False" => new ConstExpr(false),
                    "none" or "None" => new ConstExpr(null),
                    _ => new NameExpr(t.Text),
                };
            case TokKind.String:
                {
                    var s = new System.Text.StringBuilder((string)t.Value!);
                    while (Peek().Kind == TokKind.String) s.Append((string)Next().Value!);
                    return new ConstExpr(s.ToString());
                }
            case TokKind.Int or TokKind.Float:
                return new ConstExpr(t.Value);
            case TokKind.Op when t.Text == "(":
                {
                    if (Accept(")")) return new ListExpr([], tuple: true);
                    var e = Expression();
                    if (!Peek().Is(",")) { ExpectOp(")"); return e; }
                    var items = new List<Expr> { e };
                    while (Accept(","))
                    {
                        if (Peek().Is(")")) break;
                        items.Add(Expression());
                    }
                    ExpectOp(")");
                    return new ListExpr(items, tuple: true);
                }
            case TokKind.Op when t.Text == "[":
                {
                    var items = new List<Expr>();
                    while (!Accept("]"))
                    {
                        if (items.Count > 0) { ExpectOp(","); if (Accept("]")) break; }
                        items.Add(Expression());
                    }
                    return new ListExpr(items, tuple: false);
                }
            case TokKind.Op when t.Text == "{":
                {
                    var items = new List<(Expr, Expr)>();
                    while (!Accept("}"))
                    {
                        if (items.Count > 0) { ExpectOp(","); if (Accept("}")) break; }
                        var k = Expression();
                        ExpectOp(":");
                        items.Add((k, Expression()));
                    }
                    return new DictExpr(items);
                }
            default:
                throw Error(t, "unexpected token");
        }
    }

    Expr Postfix(Expr e)
    {
        while (true)
        {
            var t = Peek();
            if (t.Is("."))
            {
                Next();
                var n = Next();
                if (n.Kind is not (TokKind.Name or TokKind.Int)) throw Error(n, "expected an attribute name");
                e = new AttrExpr(e, n.Text, n.Line);
            }
            else if (t.Is("["))
            {
                Next();
                e = Subscript(e);
            }
            else if (t.Is("("))
            {
                Next();
                e = Call(e);
            }
            else return e;
        }
    }

    Expr Subscript(Expr obj)
    {
        Expr? a = null, b = null, c = null;
        if (!Peek().Is(":")) a = Expression();
        if (!Accept(":"))
        {
            ExpectOp("]");
            return new ItemExpr(obj, a!);
        }
        if (!Peek().Is(":") && !Peek().Is("]")) b = Expression();
        if (Accept(":") && !Peek().Is("]")) c = Expression();
        ExpectOp("]");
        return new SliceExpr(obj, a, b, c);
    }

    Expr Call(Expr fn)
    {
        var (args, kwargs) = Arguments();
        return new CallExpr(fn, args, kwargs);
    }

    // After "(": positional and keyword arguments up to ")".
    (List<Expr>, List<(string, Expr)>) Arguments()
    {
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!Accept(")"))
        {
            if (args.Count + kwargs.Count > 0) { ExpectOp(","); if (Accept(")")) break; }
            if (Peek().Kind == TokKind.Name && PeekAt(1).Is("="))
            {
                var k = Next();
                if (kwargs.Any(x => x.Item1 == k.Text)) throw Error(k, $"keyword argument '{k.Text}' repeated");
                Next();
                kwargs.Add((k.Text, Expression()));
            }
            else
            {
                if (kwargs.Count > 0) throw Error(Peek(), "positional argument after keyword argument");
                args.Add(Expression());
            }
        }
        return (args, kwargs);
    }

    (string, List<Expr>, List<(string, Expr)>) FilterCall()
    {
        string name = Name();
        while (Accept(".")) name += "." + Name();
        if (Accept("(")) { var (a, k) = Arguments(); return (name, a, k); }
        return (name, [], []);
    }

    Expr FilterExpr(Expr e)
    {
        while (true)
        {
            if (Accept("|"))
            {
                var (name, args, kwargs) = FilterCall();
                e = new FilterExpr(e, name, args, kwargs, Peek().Line);
            }
            else if (Peek().IsName("is"))
            {
                Next();
                bool negated = false;
                if (Peek().IsName("not")) { Next(); negated = true; }
                string name = Name();
                var args = new List<Expr>();
                if (Accept("(")) args = Arguments().Item1;
                else
                {
                    var t = Peek();
                    bool argFollows = t.Kind is TokKind.String or TokKind.Int or TokKind.Float
                        || (t.Kind == TokKind.Name && t.Text is not ("else" or "or" or "and" or "if" or "in" or "not" or "is"))
                        || (t.Kind == TokKind.Op && t.Text is "[" or "{" or "-");
                    if (argFollows) args.Add(Unary(false));
                }
                e = new TestExpr(e, name, args, negated, Peek().Line);
            }
            else if (Peek().Is("(")) { Next(); e = Call(e); }
            else return e;
        }
    }

    // ---- token helpers ----

    Tok Peek() => _toks[Math.Min(_pos, _toks.Count - 1)];
    Tok PeekAt(int k) => _toks[Math.Min(_pos + k, _toks.Count - 1)];
    Tok Next()
    {
        var t = Peek();
        if (_pos < _toks.Count) _pos++;
        return t;
    }

    bool Accept(string op)
    {
        if (!Peek().Is(op)) return false;
        _pos++;
        return true;
    }

    void ExpectOp(string op)
    {
        if (!Accept(op)) throw Error(Peek(), $"expected '{op}'");
    }

    void Expect(TokKind kind)
    {
        var t = Next();
        if (t.Kind != kind) throw Error(t, kind == TokKind.End ? "expected the end of the tag" : $"expected {kind}");
    }

    string Name()
    {
        var t = Next();
        if (t.Kind != TokKind.Name) throw Error(t, "expected a name");
        return t.Text;
    }

    static TemplateException Error(Tok t, string message) => new($"line {t.Line}: {message}, got {t}");
}
