using System.Runtime.CompilerServices;

namespace IlgpuTune.Data.Templates.Jinja;

/// <summary>
/// What one render may spend. Chat templates arrive inside downloaded tokenizer_config.json files, so like jinja2's
/// ImmutableSandboxedEnvironment they run bounded: a render that goes past any limit ends in a <see cref="TemplateException"/>.
/// </summary>
/// <param name="MaxOutput">Characters the whole render may write (the output and every macro's output together).</param>
/// <param name="TimeBudget">Wall-clock time one render may take.</param>
public sealed record TemplateLimits(long MaxOutput, TimeSpan TimeBudget)
{
    /// <summary>10 million characters of output, 10 seconds.</summary>
    public static readonly TemplateLimits Default = new(10_000_000, TimeSpan.FromSeconds(10));

    /// <summary>range() yields at most this many items, as jinja2's sandbox (MAX_RANGE).</summary>
    public const int MaxRange = 100_000;

    /// <summary>Characters in any one string and items in any one list a template builds (repetition, indent, join, repr...).</summary>
    public const long MaxLength = 10_000_000;

    /// <summary>Nesting of macro calls at render time, and of blocks, brackets and operators when parsing.</summary>
    public const int MaxDepth = 200;
}

/// <summary>One render's running account against its <see cref="TemplateLimits"/>.</summary>
sealed class Sandbox(TemplateLimits limits)
{
    readonly long _deadline = Environment.TickCount64 + (long)limits.TimeBudget.TotalMilliseconds;
    long _written;
    int _depth;

    /// <summary>Called at every node, loop iteration, call and inside long builtins: ends a render past its time budget.</summary>
    public void Tick()
    {
        if (Environment.TickCount64 > _deadline)
            throw new TemplateException($"rendering took longer than the template time budget ({limits.TimeBudget.TotalSeconds:0.#} s)");
    }

    /// <summary>Accounts <paramref name="chars"/> more characters of output before they are appended.</summary>
    public void Write(long chars)
    {
        _written += chars;
        if (_written > limits.MaxOutput)
            throw new TemplateException($"the template's output exceeds the sandbox limit of {limits.MaxOutput:N0} characters");
    }

    public void Enter(string what)
    {
        if (++_depth > TemplateLimits.MaxDepth || !RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw new TemplateException($"{what}: recursion deeper than {TemplateLimits.MaxDepth} levels");
    }

    public void Exit() => _depth--;

    /// <summary>Refuses a string of <paramref name="length"/> characters or a list of that many items before it is built.</summary>
    public static void CheckLength(long length, string what)
    {
        if (length > TemplateLimits.MaxLength || length < 0)
            throw new TemplateException($"{what} would be {(length < 0 ? "too long" : $"{length:N0} long")}, over the sandbox limit of {TemplateLimits.MaxLength:N0}");
    }

    /// <summary>Guards recursion over nested values (repr, tojson, ==): a self-built list nested thousands deep fails clearly.</summary>
    public static void CheckNesting(int depth, string what)
    {
        if (depth > TemplateLimits.MaxDepth || !RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw new TemplateException($"{what}: value nested deeper than {TemplateLimits.MaxDepth} levels");
    }
}
