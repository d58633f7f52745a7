// What a kernel is, as data: the registry (KernelRegistry) and its loading step (IKernelLoader) act on declarations only,
// so an op file says which method to run and what it needs, never how it is compiled or loaded.
using System.Globalization;
using System.Reflection;
using System.Reflection.Emit;
using ILGPU;

namespace IlgpuTune.Kernels;

/// <summary>The PTX ISA target a kernel is loaded for.</summary>
public enum KernelTarget
{
    /// <summary>The PTX as ILGPU 1.5.3 writes it (sm_80 features at most): runs on every supported GPU.</summary>
    Sm80,

    /// <summary>Retargeted to sm_90a (wgmma; ILGPU writes at most sm_90, which lacks it): compute capability 9.0 only.</summary>
    Sm90a,
}

/// <summary>Post-passes applied to a kernel's PTX before it is loaded (CUDA only).</summary>
[Flags]
public enum PtxPasses
{
    None = 0,

    /// <summary>PtxLocals.Promote: inline-asm .local slots become registers (kernels with CudaAsm).</summary>
    PromoteLocals = 1,
}

/// <summary>
/// One kernel: its cache name, entry method (explicitly grouped, or implicitly grouped when its first parameter is an
/// ILGPU index: then loaded with an occupancy-derived group size), dynamic shared memory in bytes (the limit is raised
/// past 48 KB when more), PTX target and post-passes.
/// </summary>
public readonly record struct KernelDeclaration(string Name, MethodInfo Entry, int SharedBytes = 0,
    KernelTarget Target = KernelTarget.Sm80, PtxPasses Passes = PtxPasses.None)
{
    /// <summary>A kernel from a method group (a static kernel method).</summary>
    public KernelDeclaration(string name, Delegate entry, int sharedBytes = 0, KernelTarget target = KernelTarget.Sm80,
        PtxPasses passes = PtxPasses.None) : this(name, entry.Method, sharedBytes, target, passes) { }

    /// <summary>True when the entry takes an ILGPU index first (ILGPU picks the group size).</summary>
    public bool ImplicitlyGrouped => Entry.GetParameters() is [{ ParameterType: var first }, ..]
        && (first == typeof(Index1D) || first == typeof(Index2D) || first == typeof(Index3D));
}

/// <summary>
/// Every kernel the CUDA path can load, as its declarations (what the ahead-of-time PTX build compiles). Op files declare
/// kernels where they launch them, so this reads them back: each <c>new KernelDeclaration(name, Method, …)</c> in the
/// assembly's IL with constant target and passes, plus the tables of the generated families (Gemm, FlashAttentionHalf).
/// Instantiations for the CPU emulation (a type argument named Emulated) never run on CUDA and are left out.
/// </summary>
public static partial class KernelCatalogue
{
    public static IReadOnlyList<KernelDeclaration> Cuda => LazyCuda.Value;

    private static readonly Lazy<List<KernelDeclaration>> LazyCuda = new(Read);

    private static List<KernelDeclaration> Read()
    {
        var all = new Dictionary<string, KernelDeclaration>(StringComparer.Ordinal);
        void Add(KernelDeclaration d)
        {
            if (d.Entry.IsGenericMethod && d.Entry.GetGenericArguments().Any(t => t.Name == "Emulated")) return;
            if (all.TryGetValue(d.Name, out var seen) && (seen.Entry != d.Entry || seen.Target != d.Target || seen.Passes != d.Passes))
                throw new InvalidOperationException($"kernel name '{d.Name}' is declared for both {seen.Entry.Name} and {d.Entry.Name}");
            all[d.Name] = d;
        }
        foreach (var layout in Enum.GetValues<GemmLayout>())
            foreach (var type in Enum.GetValues<HalfType>())
                foreach (var tile in Enum.GetValues<Gemm.TileConfig>())
                    Add(Gemm.Declaration(layout, type, tile, emulated: false));
        foreach (var d in Gemm.Nf4CudaDeclarations()) Add(d);
        foreach (var method in typeof(FlashAttentionHalf).GetMethods(BindingFlags.NonPublic | BindingFlags.Static))
            if (FlashKernelName().Match(method.Name) is { Success: true } m)
                foreach (var type in Enum.GetValues<HalfType>())
                    Add(FlashAttentionHalf.Declaration(m.Groups[1].Value, int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture), type,
                        emulated: false, smemBytes: 0));
        foreach (var type in typeof(KernelCatalogue).Assembly.GetTypes())
            foreach (var method in type.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static |
                         BindingFlags.Instance | BindingFlags.DeclaredOnly))
                foreach (var d in Scan(method)) Add(d);
        return [.. all.Values.OrderBy(d => d.Name, StringComparer.Ordinal)];
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^(\w+?)(\d+)Kernel$")]
    private static partial System.Text.RegularExpressions.Regex FlashKernelName();

    // The IL of `new KernelDeclaration("name", Method, shared, target, passes)`: ldstr, (ldnull; ldftn M; newobj delegate)+,
    // three int32 pushes, newobj. Branches between (k.IsEmulated ? A : B) leave several ldftn: each is a declaration.
    private static IEnumerable<KernelDeclaration> Scan(MethodInfo method)
    {
        var il = method.GetMethodBody()?.GetILAsByteArray();
        if (il is null) yield break;
        var ctor = typeof(KernelDeclaration).GetConstructor([typeof(string), typeof(Delegate), typeof(int), typeof(KernelTarget), typeof(PtxPasses)]);
        string? name = null;
        var entries = new List<MethodInfo>();
        var ints = new List<int?>();
        for (int i = 0; i < il.Length;)
        {
            var op = Op(il, ref i);
            int operand = op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => il[i],
                OperandType.InlineVar => BitConverter.ToUInt16(il, i),
                OperandType.InlineI8 or OperandType.InlineR => 0,
                OperandType.InlineSwitch => BitConverter.ToInt32(il, i),
                _ => BitConverter.ToInt32(il, i),
            };
            int size = op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * operand,
                _ => 4,
            };
            if (op == OpCodes.Ldstr) (name, entries, ints) = (method.Module.ResolveString(operand), [], []);
            else if (op == OpCodes.Ldftn && name is not null)
                entries.Add((MethodInfo)method.Module.ResolveMethod(operand, method.DeclaringType?.GetGenericArguments(), method.GetGenericArguments())!);
            else if (Int(op, il, i, operand) is { } value) ints.Add(value);
            else if (op == OpCodes.Newobj && name is not null && method.Module.ResolveMethod(operand) == ctor)
            {
                if (ints.Count < 3) throw new InvalidOperationException($"{method.DeclaringType}.{method.Name}: kernel '{name}' has a computed target or passes");
                foreach (var entry in entries)
                    yield return new(name, entry, 0, (KernelTarget)ints[^2]!.Value, (PtxPasses)ints[^1]!.Value);
                name = null;
            }
            else if (op != OpCodes.Ldnull && op != OpCodes.Newobj && op.FlowControl is not (FlowControl.Branch or FlowControl.Cond_Branch)
                     && op != OpCodes.Nop) ints.Add(null);
            i += size;
        }
    }

    private static int? Int(OpCode op, byte[] il, int at, int operand) =>
        op == OpCodes.Ldc_I4 ? operand : op == OpCodes.Ldc_I4_S ? (sbyte)il[at]
        : op.Value >= OpCodes.Ldc_I4_M1.Value && op.Value <= OpCodes.Ldc_I4_8.Value ? op.Value - OpCodes.Ldc_I4_0.Value : null;

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    private static OpCode Op(byte[] il, ref int i)
    {
        short value = il[i++];
        if (value == 0xFE) value = (short)(0xFE00 | il[i++]);
        return OpCodesByValue[value];
    }
}
