using System.Diagnostics;
using System.Text.Json;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Benchmarks.Data;

/// <summary>
/// Tokenizer speed on fresh text (benchmarks/tokenize/run-tokenize.sh runs it beside HF tokenizers' hf.mjs): a new
/// tokenizer (cold word cache), the first tenth of the corpus warms up JIT and caches (three passes, then a
/// pause for the background JIT), the rest — strings never seen
/// before — is encoded once without special tokens. Wall and process CPU seconds are both reported: on a shared machine
/// the CPU time of a one-thread run is the steadier figure. Modes: single (one thread, EncodeTo per string), batch (EncodeBatch
/// over all cores, ordered). Prints one JSON line in the shape hf.mjs prints.
/// </summary>
public static class FreshTokenize
{
    // args: TOKENIZER_DIR CORPUS_JSON single|batch
    public static int Run(string[] args)
    {
        if (args.Length != 3 || args[2] is not ("single" or "batch"))
        {
            Console.Error.WriteLine("usage: fresh-tokenize TOKENIZER_DIR CORPUS_JSON single|batch");
            return 2;
        }
        var tok = Tokenizers.FromDirectory(args[0]);
        var all = JsonSerializer.Deserialize<string[]>(File.ReadAllText(args[1]))!;
        int nWarm = (all.Length + 9) / 10;
        var warm = all[..nWarm];
        var work = all[nWarm..];
        if (Environment.GetEnvironmentVariable("FRESH_TOKENIZE_PARTS") == "1") Parts(work);
        for (int rep = 0; rep < 3; rep++) Encode(tok, warm, args[2]);
        Thread.Sleep(500);   // lets tiered JIT finish compiling the hot paths in the background
        var proc = Process.GetCurrentProcess();
        var cpu0 = proc.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        long tokens = Encode(tok, work, args[2]);
        double seconds = sw.Elapsed.TotalSeconds;
        proc.Refresh();
        double cpuSeconds = (proc.TotalProcessorTime - cpu0).TotalSeconds;
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            impl = "ilgpu-tune",
            tokenizer = Path.GetFileName(Path.TrimEndingDirectorySeparator(args[0])),
            corpus = Path.GetFileNameWithoutExtension(args[1]),
            mode = args[2],
            threads = args[2] == "single" ? 1 : Environment.ProcessorCount,
            strings = work.Length,
            chars = work.Sum(s => (long)s.Length),
            tokens,
            seconds,
            cpu_seconds = cpuSeconds,
            ids_fnv = IdsHash(tok, work),
        }));
        return 0;
    }

    // Time of the stages alone (NFC, the Qwen/Llama-3 split regex), for profiling.
    static void Parts(string[] texts)
    {
        var re = new System.Text.RegularExpressions.Regex(@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
            System.Text.RegularExpressions.RegexOptions.Compiled | System.Text.RegularExpressions.RegexOptions.CultureInvariant);
        for (int rep = 0; rep < 2; rep++)
        {
            var sw = Stopwatch.StartNew();
            long n = 0;
            foreach (var s in texts) n += UnicodeNfc.Nfc(s).Length;
            double nfc = sw.Elapsed.TotalSeconds;
            sw.Restart();
            foreach (var s in texts) foreach (var m in re.EnumerateMatches(s)) n += m.Length;
            double rx = sw.Elapsed.TotalSeconds;
            sw.Restart();
            foreach (var s in texts) n += System.Text.Encoding.UTF8.GetByteCount(s);
            Console.Error.WriteLine($"nfc {nfc:F3}s regex {rx:F3}s utf8 {sw.Elapsed.TotalSeconds:F3}s ({n})");
        }
    }

    // FNV-1a over every id of every string in order (hf.mjs computes the same), to show the outputs are identical.
    static string IdsHash(ITokenizer tok, string[] texts)
    {
        ulong h = 14695981039346656037UL;
        foreach (var ids in tok.EncodeBatch(texts))
            foreach (int id in ids) h = (h ^ (uint)id) * 1099511628211UL;
        return h.ToString("x16");
    }

    static long Encode(ITokenizer tok, string[] texts, string mode)
    {
        long n = 0;
        if (mode == "batch")
        {
            foreach (var ids in tok.EncodeBatch(texts)) n += ids.Length;
            return n;
        }
        var buf = new List<int>(4096);
        foreach (string s in texts)
        {
            buf.Clear();
            tok.EncodeTo(s, buf);
            n += buf.Count;
        }
        return n;
    }
}
