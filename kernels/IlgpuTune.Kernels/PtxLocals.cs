// PTX post-pass for kernels with inline assembly. ILGPU 1.5.3 passes every CudaAsm output (and every EmitRef operand)
// through a scalar .local slot of its own ("__local_depotN", 2, 4 or 8 bytes, addressed through "mov.b64 %rdX, __local_depotN"),
// and ptxas does not promote hundreds of them: the GEMM ran with a 3.7 KB stack frame and local-memory traffic around
// every mma (4 TFLOP/s). This pass turns each such slot into a virtual register: a slot whose pointer register is used
// only as "[%rdX]" in ld.local/st.local of one type becomes "mov" to and from a register of that type. Anything else
// (other uses, mixed types, offsets) is left as it was, so the rewrite is exact.
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using ILGPU.Backends.PTX;

namespace IlgpuTune.Kernels;

internal static partial class PtxLocals
{
    [GeneratedRegex(@"^\s*mov\.b64\s+(%rd\d+),\s*(__local_depot\d+);\s*$")]
    private static partial Regex PointerDef();

    [GeneratedRegex(@"^(\s*)st\.local\.(\w+)\s+\[(%rd\d+)\],\s*([^;]+);\s*$")]
    private static partial Regex Store();

    [GeneratedRegex(@"^(\s*)ld\.local\.(\w+)\s+(%\w+),\s*\[(%rd\d+)\];\s*$")]
    private static partial Regex Load();

    [GeneratedRegex(@"^\s*\.local\s+\.align\s+\d+\s+\.b8\s+(__local_depot\d+)\[\d+\];\s*$")]
    private static partial Regex Declaration();

    [GeneratedRegex(@"%rd\d+")]
    private static partial Regex PointerUse();

    /// <summary>Rewrites promotable .local slots of <paramref name="ptx"/> as registers; returns the new text and their count.</summary>
    public static (string Ptx, int Promoted) Promote(string ptx)
    {
        var lines = ptx.Split('\n');
        var depotOf = new Dictionary<string, string>();   // pointer register -> depot
        var typeOf = new Dictionary<string, string?>();   // pointer register -> access type, null when not promotable
        foreach (var line in lines)
        {
            var def = PointerDef().Match(line);
            if (def.Success) { depotOf[def.Groups[1].Value] = def.Groups[2].Value; typeOf[def.Groups[1].Value] = ""; }
        }
        foreach (var line in lines)
        {
            if (PointerDef().IsMatch(line)) continue;
            var st = Store().Match(line);
            var ld = st.Success ? Match.Empty : Load().Match(line);
            string? accessed = st.Success ? st.Groups[3].Value : ld.Success ? ld.Groups[4].Value : null;
            string? type = st.Success ? st.Groups[2].Value : ld.Success ? ld.Groups[2].Value : null;
            foreach (Match use in PointerUse().Matches(line))
            {
                string r = use.Value;
                if (!typeOf.TryGetValue(r, out var t) || t == null) continue;
                // Operands other than the address (a value stored, a register loaded into) disqualify the pointer.
                bool asAddress = r == accessed && (st.Success ? st.Groups[4].Value.Trim() != r : ld.Groups[3].Value != r);
                if (!asAddress || (t != "" && t != type) || type is not ("f32" or "b32" or "u32" or "s32" or "b16" or "u16" or "s16" or "b64" or "u64" or "s64"))
                    typeOf[r] = null;
                else typeOf[r] = type;
            }
        }
        var regOf = new Dictionary<string, string>(); // pointer register -> promoted register
        var promotedDepots = new HashSet<string>();
        int nf = 0, nb = 0, nh = 0, nd = 0;
        foreach (var (r, t) in typeOf)
        {
            if (string.IsNullOrEmpty(t)) continue;
            regOf[r] = t == "f32" ? $"%lpf{nf++}" : t.EndsWith("32") ? $"%lpb{nb++}" : t.EndsWith("64") ? $"%lpd{nd++}" : $"%lph{nh++}";
            promotedDepots.Add(depotOf[r]);
        }
        if (regOf.Count == 0) return (ptx, 0);

        var sb = new StringBuilder(ptx.Length);
        bool declared = false;
        foreach (var line in lines)
        {
            if (!declared && line.TrimStart().StartsWith(".reg", StringComparison.Ordinal))
            {
                if (nf > 0) sb.Append($"\t.reg .f32 %lpf<{nf}>;\n");
                if (nb > 0) sb.Append($"\t.reg .b32 %lpb<{nb}>;\n");
                if (nh > 0) sb.Append($"\t.reg .b16 %lph<{nh}>;\n");
                if (nd > 0) sb.Append($"\t.reg .b64 %lpd<{nd}>;\n");
                declared = true;
            }
            var decl = Declaration().Match(line);
            if (decl.Success && promotedDepots.Contains(decl.Groups[1].Value)) continue;
            var def = PointerDef().Match(line);
            if (def.Success && regOf.ContainsKey(def.Groups[1].Value)) continue;
            var st = Store().Match(line);
            if (st.Success && regOf.TryGetValue(st.Groups[3].Value, out var sr))
            {
                sb.Append($"{st.Groups[1].Value}mov.{st.Groups[2].Value}\t{sr}, {st.Groups[4].Value.Trim()};\n");
                continue;
            }
            var ld = Load().Match(line);
            if (ld.Success && regOf.TryGetValue(ld.Groups[4].Value, out var lr))
            {
                sb.Append($"{ld.Groups[1].Value}mov.{ld.Groups[2].Value}\t{ld.Groups[3].Value}, {lr};\n");
                continue;
            }
            sb.Append(line).Append('\n');
        }
        return (sb.ToString(0, sb.Length - 1), regOf.Count);
    }

    /// <summary>Replaces the PTX text of a compiled kernel before it is loaded (ILGPU keeps it in a read-only property).</summary>
    public static void Rewrite(PTXCompiledKernel kernel, string ptx) =>
        typeof(PTXCompiledKernel).GetField("<PTXAssembly>k__BackingField", BindingFlags.NonPublic | BindingFlags.Instance)!
            .SetValue(kernel, ptx);
}
