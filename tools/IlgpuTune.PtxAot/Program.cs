// tools/IlgpuTune.PtxAot OUT_DIR: the ahead-of-time PTX build step. Compiles every kernel of KernelCatalogue.Cuda with
// ILGPU's PTX backend for each AheadOfTimePtx architecture (no GPU needed; one thread per architecture), through
// IlgpuKernelLoader.Compile — the JIT path's own compile, post-passes and retargeting — and writes OUT_DIR/ptx/<hash>.ptx.br
// (Brotli; a text shared by both architectures is stored once) plus OUT_DIR/manifest.tsv: one line per kernel and
// architecture with what a loader needs without ILGPU (entry name, grouping, shared memory, parameter layout).
// Run by IlgpuTune.Kernels.Ptx's build whenever IlgpuTune.Kernels.dll changes.
using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using ILGPU;
using ILGPU.Backends.PTX;
using IlgpuTune.Driver;
using IlgpuTune.Kernels;

if (args.Length != 1)
{
    Console.Error.WriteLine("usage: IlgpuTune.PtxAot OUT_DIR");
    return 2;
}
string outDir = Path.GetFullPath(args[0]);
string staging = outDir + ".tmp";
if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
Directory.CreateDirectory(Path.Combine(staging, "ptx"));
var clock = Stopwatch.StartNew();
var kernels = KernelCatalogue.Cuda;
// Each kernel is compiled once, by the backend of the lowest architecture it runs on; the other architectures load that text
// (AheadOfTimePtxTests checks that their backends write the same). Two threads, each with its own ILGPU context.
var texts = new string[kernels.Count];
Parallel.For(0, 2, new ParallelOptions { MaxDegreeOfParallelism = 2 }, thread =>
{
    using var context = Context.Create(b => b.EnableAlgorithms());
    var backends = AheadOfTimePtx.Architectures.ToDictionary(a => a, a => AheadOfTimePtx.Backend(context, a));
    for (int i = thread; i < kernels.Count; i += 2)
    {
        var architecture = AheadOfTimePtx.Architectures.First(a => AheadOfTimePtx.Runs(a, kernels[i]));
        texts[i] = ((PTXCompiledKernel)IlgpuKernelLoader.Compile(backends[architecture], kernels[i])).PTXAssembly;
    }
    foreach (var backend in backends.Values) backend.Dispose();
});
var lines = AheadOfTimePtx.Architectures.SelectMany(architecture =>
    {
        var rows = new List<(string Line, string Ptx, string File)>();
        foreach (var (kernel, ptx) in kernels.Zip(texts))
        {
            if (!AheadOfTimePtx.Runs(architecture, kernel)) continue;
            var signature = PtxSignature.Parse(ptx);
            string file = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(ptx)))[..16];
            var entry = new PtxEntry(AheadOfTimePtx.Folder(architecture), kernel.Name, file, signature.Entry, AheadOfTimePtx.MethodKey(kernel.Entry),
                kernel.ImplicitlyGrouped, kernel.Target.ToString(), kernel.Passes.ToString(), signature.StaticShared, signature.DynamicShared,
                signature.Parameters);
            rows.Add((entry.ToLine(), ptx, file));
        }
        return rows;
    }).ToList();
foreach (var (_, ptx, file) in lines.DistinctBy(l => l.File))
{
    using var output = File.Create(Path.Combine(staging, "ptx", file + ".ptx.br"));
    using var brotli = new BrotliStream(output, CompressionLevel.Optimal);
    brotli.Write(Encoding.UTF8.GetBytes(ptx));
}
File.WriteAllLines(Path.Combine(staging, PtxLibrary.ManifestName), [PtxEntry.Header, .. lines.Select(l => l.Line)]);
if (Directory.Exists(outDir)) Directory.Delete(outDir, recursive: true);
Directory.Move(staging, outDir);
Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
    $"IlgpuTune.PtxAot: {kernels.Count} kernels, {lines.Count} PTX entries ({lines.DistinctBy(l => l.File).Count()} distinct texts) for " +
    $"{string.Join(", ", AheadOfTimePtx.Architectures.Select(AheadOfTimePtx.Folder))} in {clock.Elapsed.TotalSeconds:F1} s -> {outDir}"));
return 0;
