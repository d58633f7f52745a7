using System.Runtime.CompilerServices;
using System.Text;

namespace IlgpuTune.Data.Templates.Jinja;

/// <summary>Variables in nested frames (a for-loop iteration or a macro call gets its own) plus the output.</summary>
sealed class Context
{
    readonly List<Dictionary<string, object?>> _frames;
    public StringBuilder Out { get; }
    /// <summary>Set by break/continue; the enclosing loop clears it.</summary>
    public LoopSignal Signal;

    /// <summary>The render's budget (time, output, call depth), shared by every macro call of the render.</summary>
    public Sandbox Box { get; }

    public Context(List<Dictionary<string, object?>> frames, StringBuilder output, Sandbox box)
    {
        _frames = frames;
        Out = output;
        Box = box;
    }

    /// <summary>Appends to the output within the render's output budget.</summary>
    public void Write(string s)
    {
        Box.Write(s.Length);
        Out.Append(s);
    }

    public object? Lookup(string name)
    {
        for (int i = _frames.Count - 1; i >= 0; i--)
            if (_frames[i].TryGetValue(name, out var v)) return v;
        return new Undefined(name);
    }

    public void Set(string name, object? value) => _frames[^1][name] = value;
    public void Push() => _frames.Add([]);
    public void Pop() => _frames.RemoveAt(_frames.Count - 1);
    public List<Dictionary<string, object?>> Frames => _frames;
}

enum LoopSignal { None, Break, Continue }

abstract class Node
{
    public abstract void Render(Context c);

    public static void RenderAll(List<Node> body, Context c)
    {
        foreach (var n in body)
        {
            c.Box.Tick();
            n.Render(c);
            if (c.Signal != LoopSignal.None) return;
        }
    }
}

sealed class TextNode(string text) : Node
{
    public override void Render(Context c) => c.Write(text);
}

sealed class OutputNode(Expr e) : Node
{
    public override void Render(Context c) => c.Write(Py.Str(e.Eval(c)));
}

sealed class BlockNode(List<Node> body) : Node
{
    public override void Render(Context c) => RenderAll(body, c);
}

sealed class BreakNode : Node
{
    public override void Render(Context c) => c.Signal = LoopSignal.Break;
}

sealed class ContinueNode : Node
{
    public override void Render(Context c) => c.Signal = LoopSignal.Continue;
}

sealed class IfNode(List<(Expr Cond, List<Node> Body)> branches, List<Node>? otherwise) : Node
{
    public override void Render(Context c)
    {
        foreach (var (cond, body) in branches)
            if (Py.Truthy(cond.Eval(c)))
            {
                RenderAll(body, c);
                return;
            }
        if (otherwise is not null) RenderAll(otherwise, c);
    }
}

sealed class ForNode(List<string> targets, Expr iter, Expr? filter, List<Node> body, List<Node>? otherwise) : Node
{
    public override void Render(Context c)
    {
        var items = Py.Iterate(iter.Eval(c), "for loop").ToList();
        if (filter is not null)
        {
            var kept = new List<object?>();
            foreach (var it in items)
            {
                c.Box.Tick();
                c.Push();
                Bind(c, it);
                if (Py.Truthy(filter.Eval(c))) kept.Add(it);
                c.Pop();
            }
            items = kept;
        }
        if (items.Count == 0)
        {
            if (otherwise is not null) RenderAll(otherwise, c);
            return;
        }
        for (int i = 0; i < items.Count; i++)
        {
            c.Push();
            c.Set("loop", new LoopInfo(items, i));
            Bind(c, items[i]);
            RenderAll(body, c);
            c.Pop();
            var s = c.Signal;
            c.Signal = LoopSignal.None;
            if (s == LoopSignal.Break) break;
        }
    }

    void Bind(Context c, object? item)
    {
        if (targets.Count == 1)
        {
            c.Set(targets[0], item);
            return;
        }
        var parts = Py.Iterate(item, "unpacking").ToList();
        if (parts.Count != targets.Count) throw new TemplateException($"cannot unpack {parts.Count} values into {targets.Count} names");
        for (int k = 0; k < targets.Count; k++) c.Set(targets[k], parts[k]);
    }
}

sealed class SetNode(List<string> names, Expr value) : Node
{
    public override void Render(Context c)
    {
        var v = value.Eval(c);
        if (names.Count == 1)
        {
            c.Set(names[0], v);
            return;
        }
        var parts = Py.Iterate(v, "unpacking").ToList();
        if (parts.Count != names.Count) throw new TemplateException($"cannot unpack {parts.Count} values into {names.Count} names");
        for (int k = 0; k < names.Count; k++) c.Set(names[k], parts[k]);
    }
}

sealed class SetAttrNode(string target, string attr, Expr value) : Node
{
    public override void Render(Context c)
    {
        if (c.Lookup(target) is not Namespace ns) throw new TemplateException($"cannot assign attribute on non-namespace object '{target}'");
        ns.Attrs[attr] = value.Eval(c);
    }
}

sealed class SetBlockNode(string name, List<Node> body, List<(string Name, List<Expr> Args, List<(string, Expr)> Kwargs)> filters) : Node
{
    public override void Render(Context c)
    {
        var saved = c.Out.Length;
        RenderAll(body, c);
        object? v = c.Out.ToString(saved, c.Out.Length - saved);
        c.Out.Length = saved;
        foreach (var f in filters) v = Builtins.Filter(f.Name, v, Eval(f.Args, c), EvalKw(f.Kwargs, c), c.Box);
        c.Set(name, v);
    }

    public static List<object?> Eval(List<Expr> args, Context c) => args.Select(a => a.Eval(c)).ToList();
    public static Dictionary<string, object?> EvalKw(List<(string Name, Expr Value)> kw, Context c) =>
        kw.ToDictionary(k => k.Name, k => k.Value.Eval(c));
}

sealed class MacroNode(string name, List<(string Name, Expr? Default)> parameters, List<Node> body) : Node
{
    public override void Render(Context c)
    {
        var frames = c.Frames.ToList();   // the defining scope, as Jinja's macros close over it
        var box = c.Box;
        c.Set(name, new Callable(name, (args, kwargs) =>
        {
            box.Enter($"macro '{name}'");
            try
            {
                return Call(args, kwargs, new Context([.. frames, []], new StringBuilder(), box));
            }
            finally
            {
                box.Exit();
            }
        }));
    }

    string Call(List<object?> args, Dictionary<string, object?> kwargs, Context mc)
    {
        for (int i = 0; i < parameters.Count; i++)
        {
            var (p, def) = parameters[i];
            object? v = i < args.Count ? args[i] : kwargs.TryGetValue(p, out var kv) ? kv : def is null ? new Undefined(p) : def.Eval(mc);
            mc.Set(p, v);
        }
        if (args.Count > parameters.Count) throw new TemplateException($"macro '{name}' takes {parameters.Count} arguments, got {args.Count}");
        RenderAll(body, mc);
        return mc.Out.ToString();
    }
}

// ---- expressions ----

abstract class Expr
{
    /// <summary>
    /// Evaluates with a stack check: a chain like 1+1+...+1 or a|f|f|... builds a tree as deep as it is long, and .NET
    /// cannot catch a stack overflow.
    /// </summary>
    public object? Eval(Context c)
    {
        if (!RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw new TemplateException($"expression nested too deeply (more than the sandbox evaluates)");
        return Evaluate(c);
    }

    protected abstract object? Evaluate(Context c);
}

sealed class ConstExpr(object? value) : Expr
{
    protected override object? Evaluate(Context c) => value;
}

sealed class NameExpr(string name) : Expr
{
    protected override object? Evaluate(Context c) => c.Lookup(name);
}

sealed class ListExpr(List<Expr> items, bool tuple) : Expr
{
    protected override object? Evaluate(Context c) => tuple ? new PyTuple(items.Select(i => i.Eval(c))) : items.Select(i => i.Eval(c)).ToList();
}

sealed class DictExpr(List<(Expr Key, Expr Value)> items) : Expr
{
    protected override object? Evaluate(Context c)
    {
        var d = new Dictionary<string, object?>();
        foreach (var (k, v) in items)
            d[k.Eval(c) as string ?? throw new TemplateException("only string dict keys are supported")] = v.Eval(c);
        return d;
    }
}

sealed class AttrExpr(Expr obj, string name, int line) : Expr
{
    protected override object? Evaluate(Context c) => Py.GetAttr(obj.Eval(c), name, line);
}

sealed class ItemExpr(Expr obj, Expr index) : Expr
{
    protected override object? Evaluate(Context c) => Py.GetItem(obj.Eval(c), index.Eval(c));
}

sealed class SliceExpr(Expr obj, Expr? start, Expr? stop, Expr? step) : Expr
{
    protected override object? Evaluate(Context c) => Py.Slice(obj.Eval(c), start?.Eval(c), stop?.Eval(c), step?.Eval(c));
}

sealed class CallExpr(Expr fn, List<Expr> args, List<(string, Expr)> kwargs) : Expr
{
    protected override object? Evaluate(Context c)
    {
        var f = fn.Eval(c);
        if (f is not Callable call) throw new TemplateException($"{Py.Describe(f)} is not callable");
        return call.Invoke(SetBlockNode.Eval(args, c), SetBlockNode.EvalKw(kwargs, c));
    }
}

sealed class FilterExpr(Expr value, string name, List<Expr> args, List<(string, Expr)> kwargs, int line) : Expr
{
    protected override object? Evaluate(Context c)
    {
        try
        {
            return Builtins.Filter(name, value.Eval(c), SetBlockNode.Eval(args, c), SetBlockNode.EvalKw(kwargs, c), c.Box);
        }
        catch (TemplateException e) when (!e.Message.StartsWith("line ", StringComparison.Ordinal))
        {
            throw new TemplateException($"line {line}: {e.Message}");
        }
    }
}

sealed class TestExpr(Expr value, string name, List<Expr> args, bool negated, int line) : Expr
{
    protected override object? Evaluate(Context c)
    {
        try
        {
            return Builtins.Test(name, value.Eval(c), SetBlockNode.Eval(args, c), c.Box) != negated;
        }
        catch (TemplateException e) when (!e.Message.StartsWith("line ", StringComparison.Ordinal))
        {
            throw new TemplateException($"line {line}: {e.Message}");
        }
    }
}

sealed class NotExpr(Expr e) : Expr
{
    protected override object? Evaluate(Context c) => !Py.Truthy(e.Eval(c));
}

sealed class NegExpr(Expr e) : Expr
{
    protected override object? Evaluate(Context c) => e.Eval(c) switch
    {
        long l => l == long.MinValue ? throw new TemplateException("integer overflow: -(-2**63) does not fit in 64 bits") : (object)(-l),
        double d => -d,
        bool b => b ? -1L : 0L,
        var v => throw new TemplateException($"bad operand for unary -: {Py.Describe(v)}"),
    };
}

sealed class AndExpr(Expr a, Expr b) : Expr
{
    protected override object? Evaluate(Context c)
    {
        var l = a.Eval(c);
        return Py.Truthy(l) ? b.Eval(c) : l;
    }
}

sealed class OrExpr(Expr a, Expr b) : Expr
{
    protected override object? Evaluate(Context c)
    {
        var l = a.Eval(c);
        return Py.Truthy(l) ? l : b.Eval(c);
    }
}

sealed class CondExpr(Expr cond, Expr then, Expr? otherwise) : Expr
{
    protected override object? Evaluate(Context c) =>
        Py.Truthy(cond.Eval(c)) ? then.Eval(c) : otherwise is null ? new Undefined("(else branch)") : otherwise.Eval(c);
}

sealed class BinExpr(string op, Expr a, Expr b) : Expr
{
    protected override object? Evaluate(Context c) => Py.Binary(op, a.Eval(c), b.Eval(c));
}

sealed class CompareExpr(Expr first, List<(string Op, Expr Right)> ops) : Expr
{
    protected override object? Evaluate(Context c)
    {
        var l = first.Eval(c);
        foreach (var (op, re) in ops)
        {
            var r = re.Eval(c);
            if (!Py.Compare(op, l, r)) return false;
            l = r;
        }
        return true;
    }
}
