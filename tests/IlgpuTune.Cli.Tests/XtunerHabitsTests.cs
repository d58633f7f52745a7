using System.Diagnostics;
using System.Text;
using IlgpuTune.Core;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Model;
using IlgpuTune.Model.Generation;
using IlgpuTune.TestKit;
using IlgpuTune.Training;
using IlgpuTune.Training.Configs;
using Xunit.Abstractions;

namespace IlgpuTune.Cli.Tests;

/// <summary>What an XTuner user types works, or says clearly why not.</summary>
public class XtunerHabitsTests(ITestOutputHelper log)
{
    static readonly string[] s_short = ["--cfg-options", "max_iters=2", "save_steps=2", "device=cpu", "evaluation_freq=1000", "evaluation_max_new_tokens=2"];

    (int Code, string Stdout, string Stderr) Run(Dictionary<string, string>? env, params string[] args)
    {
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, StandardOutputEncoding = Encoding.UTF8,
        };
        psi.ArgumentList.Add(typeof(ChatCommands).Assembly.Location);
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env ?? []) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        log.WriteLine($"exit {p.ExitCode}\nstdout: {stdout}\nstderr: {stderr.Result}");
        return (p.ExitCode, stdout, stderr.Result);
    }

    [Fact]
    public void ListCfg_PrintsXtunersFrame_AndFiltersByPattern()
    {
        var (code, stdout, _) = Run(null, "list-cfg", "-p", "InternLM2_chat_1_8b_DPO");
        Assert.Equal(0, code);
        var lines = stdout.TrimEnd('\n').Split('\n');
        Assert.Equal("==========================CONFIGS===========================", lines[0]);
        Assert.Equal(["PATTERN: InternLM2_chat_1_8b_DPO", "-------------------------------"], lines[1..3]);
        Assert.Equal(["internlm2_chat_1_8b_dpo_full", "internlm2_chat_1_8b_dpo_lora", "internlm2_chat_1_8b_dpo_qlora"], lines[3..^1]);
        Assert.Equal("=============================================================", lines[^1]);
        var all = Run(null, "list-cfg").Stdout;
        foreach (var name in new[] { "internlm2_7b_qlora_colorist_e5", "internlm_chat_7b_qlora_oasst1_e3", Builtins.DefaultConfig })
            Assert.Contains("\n" + name + "\n", all);
    }

    [Fact]
    public void CopyCfgAsPy_TrainsWithDeepspeedOffload_ThenPthToHfExportsTheAdapter()
    {
        using var dir = new TempDir();
        var (code, stdout, _) = Run(null, "copy-cfg", "tiny_llama_lora_colorist_e3", dir.Path, "--format", "py");
        Assert.Equal(0, code);
        string py = dir.File("tiny_llama_lora_colorist_e3_copy.py");
        Assert.Equal($"Copy to {py}\n", stdout);
        Assert.Contains("type=LoraConfig", File.ReadAllText(py));

        string work = dir.File("work");
        (code, stdout, _) = Run(null, ["train", py, "--work-dir", work, "--deepspeed", "deepspeed_zero2_offload", .. s_short]);
        Assert.Equal(0, code);
        Assert.Contains("note: --deepspeed deepspeed_zero2_offload: ZeRO stage 2", stdout);
        Assert.Contains("optimizer offload -> paged_optimizer", stdout);

        string outDir = dir.File("hf");
        (code, stdout, _) = Run(null, "convert", "pth_to_hf", py, Path.Combine(work, "iter_2.pth"), outDir);
        Assert.Equal(0, code);
        Assert.Contains("Saving adapter to", stdout);
        Assert.True(File.Exists(Path.Combine(outDir, "adapter_config.json")));
        using (var st = IlgpuTune.IO.SafetensorsFile.Open(Path.Combine(outDir, "adapter_model.safetensors")))
            Assert.All(st.Tensors, t => Assert.Equal("F16", t.DType)); // float16 unless --fp32, as XTuner

        // A full fine-tuning config does not describe a LoRA checkpoint.
        var (bad, _, err) = Run(null, ["convert", "pth_to_hf", py, Path.Combine(work, "iter_2"), dir.File("hf2"), "--cfg-options", "lora=null"]);
        Assert.Equal(2, bad);
        Assert.Contains("holds LoRA weights but", err);
    }

    // Multi-GPU launch forms reach NCCL (pointed at a missing copy here, so the test means the same with or without GPUs):
    // every rank stops with one line saying how to get NCCL, and the launcher stops the job with that rank's code.
    [Theory]
    [InlineData("NPROC_PER_NODE", "2")]
    [InlineData("--nproc", "2")]
    [InlineData("--launcher", "pytorch")]
    [InlineData("--launcher", "slurm")]
    public void MultiGpuLaunchForms_NeedNccl_AndSaySo(string how, string value)
    {
        var env = new Dictionary<string, string> { ["NCCL_LIBRARY"] = "/nonexistent/libnccl.so.2" };
        string[] extra = [];
        if (how == "NPROC_PER_NODE") env[how] = value;
        else extra = [how, value];
        if (value == "pytorch") (env["RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"]) = ("1", "2", "127.0.0.1");
        if (value == "slurm") (env["SLURM_PROCID"], env["SLURM_NTASKS"], env["SLURM_NODELIST"]) = ("1", "2", "localhost");
        var (code, _, stderr) = Run(env, ["train", Builtins.DefaultConfig, .. extra, .. s_short]);
        Assert.Equal(2, code);
        Assert.Contains("error: NCCL_LIBRARY=/nonexistent/libnccl.so.2: no loadable libnccl.so.2 there. Training on several GPUs needs NVIDIA's NCCL", stderr);
        Assert.Contains("pip install nvidia-nccl-cu12", stderr);
        if (how != "--launcher") Assert.Matches(@"error: rank \d exited with code 2; the other ranks were stopped", stderr);
    }

    [Fact]
    public void DeepSpeedUnknownName_IsRefused()
    {
        var (code, _, stderr) = Run(null, ["train", Builtins.DefaultConfig, "--deepspeed", "zero4"]);
        Assert.Equal(2, code);
        Assert.Contains("--deepspeed zero4: expected deepspeed_zero1", stderr);
    }

    [Fact]
    public void ChatBits4_QuantizesOnLoad_NoStreamer_PromptTemplateNone()
    {
        string model = Builtins.ResolveAsset(Builtins.TinyPrefix);
        // The answer by the book on the NF4-quantized model: raw text in, greedy, up to 4 tokens or the EOS.
        string expected;
        using (var device = Device.Create("cpu"))
        using (var lm = ModelLoader.Load(model, device, quantization: IlgpuTune.Numerics.QuantType.Nf4))
        {
            Assert.NotEmpty(lm.QuantizedWeights);
            var tok = HfTokenizer.FromDirectory(model);
            var ids = tok.Encode("the color tomato", addSpecialTokens: true).ToList();
            int prompt = ids.Count;
            for (int step = 0; step < 4; step++)
            {
                using var logits = lm.Forward([.. ids], 1, ids.Count);
                var all = logits.ToFloatArray();
                int next = Sampling.Argmax(all.AsSpan(all.Length - lm.Config.VocabSize));
                if (next == tok.EosTokenId) break;
                ids.Add(next);
            }
            expected = tok.Decode(ids[prompt..]);
        }
        var (code, stdout, _) = Run(null, "chat", model, "--bits", "4", "--no-streamer", "--prompt-template", "none", "--prompt", "the color tomato",
            "--temperature", "0", "--max-new-tokens", "4", "--device", "cpu");
        Assert.Equal(0, code);
        Assert.Equal(expected + "\n", stdout);

        var (eight, _, err) = Run(null, "chat", model, "--bits", "8", "--prompt", "x");
        Assert.NotEqual(0, eight);
        Assert.Contains("--bits 8: 8-bit (LLM.int8) loading is not supported", err);
    }

    [Fact]
    public void DeepSpeedJson_MapsOffloadDtypeAndNumbers()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("ds.json"), """
            {"gradient_accumulation_steps": 4, "train_micro_batch_size_per_gpu": "auto", "gradient_clipping": 0.5,
             "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}},
             "fp16": {"enabled": "auto"}, "bf16": {"enabled": true}}
            """);
        var (overrides, message) = DeepSpeed.Map(dir.File("ds.json"));
        Assert.Equal(["paged_optimizer=true", "dtype=bfloat16", "accumulative_counts=4", "max_norm=0.5"], overrides);
        Assert.Contains("ZeRO stage 3", message);
        Assert.Contains("parameters stay on the GPU", message);
        Assert.Empty(DeepSpeed.Map("deepspeed_zero1").Overrides);
        // On several GPUs the stage is what runs; stage 3 runs as 2.
        Assert.Equal(1, DeepSpeed.Plan("deepspeed_zero1", 4).ZeroStage);
        Assert.Equal(2, DeepSpeed.Plan("zero2_offload", 4).ZeroStage);
        Assert.Equal(["paged_optimizer=true"], DeepSpeed.Plan("zero2_offload", 4).Overrides);
        Assert.Contains("runs as stage 2", DeepSpeed.Plan("deepspeed_zero3", 2).Message);
        Assert.Equal(0, DeepSpeed.Plan("deepspeed_zero2", 1).ZeroStage);
    }
}
