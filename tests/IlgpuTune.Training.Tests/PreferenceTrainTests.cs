using IlgpuTune.TestKit;
using IlgpuTune.Training;

namespace IlgpuTune.Training.Tests;

/// <summary>The embedded preference demos train on the tiny model: DPO separates every pair, ORPO lowers the chosen NLL.</summary>
public class PreferenceTrainTests
{
    static (TrainResult Result, List<string> Lines) Train(string config, params string[] overrides)
    {
        var work = new TempDir();
        var lines = new List<string>();
        var cfg = Builtins.LoadConfig(config, ["device=cpu", .. overrides]);
        return (Trainer.Run(cfg, new TrainOptions { WorkDir = work.Path, Console = lines.Add }), lines);
    }

    [Fact]
    public void Dpo_ReachesFullRewardAccuracyWithGrowingMargins()
    {
        var (r, lines) = Train("tiny_llama_lora_color_dpo");
        var log = r.Log.Where(x => x.Metrics is not null).ToList();
        Assert.True(log.Count >= 4, string.Join("\n", lines));
        var margins = log.Select(x => x.Metrics!["rewards/margins"]).ToList();
        Assert.Equal(1.0, log[^1].Metrics!["rewards/accuracies"]);
        Assert.True(margins[^1] > margins[0] + 0.5 && margins[^1] > margins[^2] * 0.9, string.Join(", ", margins));
        Assert.True(log[^1].Loss < log[0].Loss * 0.5, $"{log[0].Loss} -> {log[^1].Loss}");
        Assert.Contains(lines, l => l.Contains("rewards/margins: ") && l.Contains("logps/chosen: "));
        Assert.True(File.Exists(Path.Combine(r.WorkDir, "reference_logps.json")));
    }

    [Fact]
    public void Orpo_LowersChosenNllWhileSeparatingPairs()
    {
        var (r, lines) = Train("tiny_llama_lora_color_orpo");
        var log = r.Log.Where(x => x.Metrics is not null).ToList();
        Assert.True(log.Count >= 4, string.Join("\n", lines));
        Assert.True(log[^1].Metrics!["nll_loss"] < log[0].Metrics!["nll_loss"] * 0.7,
            $"{log[0].Metrics!["nll_loss"]} -> {log[^1].Metrics!["nll_loss"]}");
        Assert.True(log[^1].Metrics!["rewards/margins"] > log[0].Metrics!["rewards/margins"]);
        Assert.True(log[^1].Metrics!["rewards/accuracies"] >= 0.9);
    }

    [Fact]
    public void Reward_RanksPairsAndExportsASequenceClassifier()
    {
        var (r, lines) = Train("tiny_llama_lora_color_reward");
        var log = r.Log.Where(x => x.Metrics is not null).ToList();
        Assert.True(log[^1].Metrics!["rewards/accuracies"] >= 0.9, string.Join("\n", lines));
        Assert.True(log[^1].Metrics!["rewards/margins"] > log[0].Metrics!["rewards/margins"] + 0.5);
        string dir = Path.Combine(r.WorkDir, "reward_model");
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
        Assert.Equal("LlamaForSequenceClassification", (string?)config["architectures"]![0]);
        Assert.Equal(1, (int)config["num_labels"]!);
        Assert.Equal(557, (int)config["reward_token_id"]!);
        using var st = IlgpuTune.IO.SafetensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        Assert.Equal([1L, 64L], st.Get("score.weight").Shape);
        Assert.False(st.Contains("lm_head.weight"));
        Assert.True(st.Contains("model.layers.0.self_attn.q_proj.weight"));

        // The exported folder scores as training did: chosen above rejected for the demo pairs.
        using var dev = IlgpuTune.Core.Device.Create("cpu");
        var (lm, head, token) = IlgpuTune.Training.Preference.RewardModel.Load(dir, dev);
        using (lm)
        using (head)
        using (IlgpuTune.Core.Tape.NoGrad())
        {
            var tok = IlgpuTune.Data.Tokenization.Tokenizers.FromDirectory(dir);
            var enc = IlgpuTune.Data.DataPipeline.CreateEncoder(new IlgpuTune.Data.DataOptions { DataFiles = [], Format = "openai", TokenizerDir = dir,
                Template = "qwen_chat", MaxLength = 64 }, tok);
            var pairs = IlgpuTune.Data.Preference.PreferenceData.Read([Builtins.ResolveAsset("@tiny/color_preference.jsonl")]);
            int right = pairs.Count(p =>
            {
                var e = IlgpuTune.Data.Preference.PreferenceData.Encode(p, enc, token);
                return IlgpuTune.Training.Preference.RewardModel.Score(lm, head, e.Chosen.InputIds) > IlgpuTune.Training.Preference.RewardModel.Score(lm, head, e.Rejected.InputIds);
            });
            Assert.True(right >= pairs.Count * 0.9, $"{right} of {pairs.Count}");
        }
        // `score` reads the same folder.
        var (code, output) = Cli("score", dir, "--prompt-template", "qwen_chat", "--data", Builtins.ResolveAsset("@tiny/color_preference.jsonl"), "--device", "cpu");
        Assert.Equal(0, code);
        Assert.Matches(@"32 pairs, chosen ranked higher in (29|30|31|32) ", output);
        Assert.Contains("color_preference.jsonl:1\tchosen ", output);
    }

    [Fact]
    public void FullFineTuningDpo_KeepsItsReferenceLogpsForResume()
    {
        using var work = new TempDir();
        string[] o = ["device=cpu", "lora=null", "max_iters=4", "save_steps=2", "lr=1e-4"];
        var cfg = Builtins.LoadConfig("tiny_llama_lora_color_dpo", o);
        var first = Trainer.Run(cfg, new TrainOptions { WorkDir = work.Path, StopAfter = 2, Console = _ => { } });
        Assert.Equal(2, first.Done);
        string reference = Path.Combine(work.Path, "reference_logps.json");
        string saved = File.ReadAllText(reference);
        // The weights have moved: without the kept log-probs a full fine-tuning run cannot resume.
        File.Delete(reference);
        var e = Assert.Throws<InvalidDataException>(() =>
            Trainer.Run(Builtins.LoadConfig("tiny_llama_lora_color_dpo", o), new TrainOptions { WorkDir = work.Path, Resume = "", Console = _ => { } }));
        Assert.Contains("reference log-probs", e.Message);
        File.WriteAllText(reference, saved);
        var resumed = Trainer.Run(Builtins.LoadConfig("tiny_llama_lora_color_dpo", o), new TrainOptions { WorkDir = work.Path, Resume = "", Console = _ => { } });
        Assert.Equal(4, resumed.Done);
        Assert.Null(resumed.AdapterDir);
    }

    [Fact]
    public void CheckAndLogDataset_ShowPairs()
    {
        var (code, output) = Cli("check-dataset", "tiny_llama_lora_color_dpo");
        Assert.Equal(0, code);
        Assert.Contains("preference pairs: 32", output);
        Assert.Contains("packed: 32 rows of ≤ 128 tokens", output);
        (code, output) = Cli("log-dataset", "tiny_llama_lora_color_dpo", "--show", "masked_text");
        Assert.Equal(0, code);
        Assert.Matches(@"pair color_preference\.jsonl:\d+: chosen, \d+ tokens", output);
        Assert.Matches(@"pair color_preference\.jsonl:\d+: rejected, \d+ tokens", output);
    }

    static (int Code, string Output) Cli(params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "ilgpu-tune.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = System.Diagnostics.Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output + err.Result);
    }
}
