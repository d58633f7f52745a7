using System.Diagnostics;
using System.Text.Json;
using IlgpuTune.Data;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Benchmarks.Data;

/// <summary>
/// Dataset preparation at scale (benchmarks/scale/run-scale.sh): DataPipeline.Prepare of an XTuner conversation file
/// (qwen_chat, packing) into an empty cache folder, then again (a cache hit). Prints one JSON line.
/// </summary>
public static class PrepareDataset
{
    // args: TOKENIZER_DIR DATA_FILE CACHE_DIR MAX_LENGTH
    public static int Run(string[] args)
    {
        if (args.Length != 4)
        {
            Console.Error.WriteLine("usage: prepare-dataset TOKENIZER_DIR DATA_FILE CACHE_DIR MAX_LENGTH");
            return 2;
        }
        var o = new DataOptions
        {
            DataFiles = [args[1]], Format = "conversation", TokenizerDir = args[0], Template = "qwen_chat", MaxLength = int.Parse(args[3]),
        };
        if (Environment.GetEnvironmentVariable("PREPARE_STAGES") == "1") Stages(o, args[2]);
        var proc = Process.GetCurrentProcess();
        var sw = Stopwatch.StartNew();
        var tok = Tokenizers.FromDirectory(args[0]);
        double load = sw.Elapsed.TotalSeconds;
        var cpu0 = proc.TotalProcessorTime;
        sw.Restart();
        long tokens;
        int samples, rows;
        using (var c = DataPipeline.Prepare(o, tok, args[2]))
            (tokens, samples, rows) = (c.Stats.Tokens, c.Stats.Samples, c.Stats.Rows);
        double prepare = sw.Elapsed.TotalSeconds;
        proc.Refresh();
        double cpu = (proc.TotalProcessorTime - cpu0).TotalSeconds;
        long peak = proc.PeakWorkingSet64;
        sw.Restart();
        using (var again = DataPipeline.Prepare(o, tok, args[2])) { }
        double hit = sw.Elapsed.TotalSeconds;
        long bytes = Directory.EnumerateFiles(args[2], "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            data_bytes = new FileInfo(args[1]).Length, samples, rows, tokens, tokenizer_load_s = load, prepare_s = prepare, prepare_cpu_s = cpu,
            samples_per_s = samples / prepare, cache_hit_s = hit, cache_bytes = bytes, cache_bytes_per_token = (double)bytes / tokens,
            peak_working_set_mb = peak >> 20, cores = Environment.ProcessorCount,
        }));
        return 0;
    }

    // CPU and wall time of each stage alone (profiling aid).
    static void Stages(DataOptions o, string cacheDir)
    {
        var proc = Process.GetCurrentProcess();
        var sw = Stopwatch.StartNew();
        var cpu = proc.TotalProcessorTime;
        void Mark(string what)
        {
            proc.Refresh();
            Console.Error.WriteLine($"{what}: {sw.Elapsed.TotalSeconds:F2} s wall, {(proc.TotalProcessorTime - cpu).TotalSeconds:F2} s CPU");
            cpu = proc.TotalProcessorTime;
            sw.Restart();
        }
        var tok = Tokenizers.FromDirectory(o.TokenizerDir);
        Mark("tokenizer");
        var (conversations, _) = DataPipeline.Read(o);
        Mark("read");
        var samples = DataPipeline.EncodeAll(conversations, DataPipeline.CreateEncoder(o, tok));
        Mark("encode");
        var (rows, stats) = DataPipeline.Pack(samples, o);
        Mark("pack");
        using (IlgpuTune.Data.Packing.PackedCache.Write(cacheDir + "-stages", "k", rows, stats)) { }
        Mark("write");
    }
}
