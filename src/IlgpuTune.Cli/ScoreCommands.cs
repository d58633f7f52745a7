// `score`: rates responses with a reward model trained by `train` (preference: reward; work_dir/reward_model). Each
// conversation is rendered with the prompt template as in training, the reward token appended, and the value head read
// at it. With --data (XTuner preference JSONL) both sides of every pair are scored and the share of pairs ranked right
// is printed; with --prompt and --response one score.
using Cocona;
using IlgpuTune.Core;
using IlgpuTune.Data;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Preference;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Training.Preference;

namespace IlgpuTune.Cli;

[FriendlyErrors]
public sealed class ScoreCommands
{
    [Command("score", Description = "Score responses with a reward model folder (train with preference: reward writes work_dir/reward_model): " +
        "every pair of a preference JSONL (--data), or one --prompt / --response")]
    public int Score(
        [Argument(Description = "reward model folder")] string model,
        [Option("prompt-template", Description = "the prompt template the reward model was trained with (an XTuner template or a chat template name)")] string promptTemplate,
        [Option("data", Description = "preference JSONL: {\"prompt\": [...], \"chosen\": [...], \"rejected\": [...]} per line")] string? data = null,
        [Option("prompt", Description = "the user turn to score a response to")] string? prompt = null,
        [Option("response", Description = "the assistant response to score")] string? response = null,
        [Option("max-length", Description = "tokens per scored conversation (longer ones are truncated, the reward token kept)")] int maxLength = 2048,
        [Option("device", Description = "cuda, cpu, ilgpu-cpu or auto")] string? device = null)
    {
        if ((data is null) == (prompt is null || response is null))
            throw new ArgumentException("give --data, or --prompt with --response");
        if (!Directory.Exists(model)) throw new DirectoryNotFoundException($"reward model folder {model} does not exist");
        var tokenizer = Tokenizers.FromDirectory(model);
        var encoder = DataPipeline.CreateEncoder(new DataOptions { DataFiles = [], Format = "openai", TokenizerDir = model, Template = promptTemplate, MaxLength = maxLength },
            tokenizer);
        using var dev = Device.Create(device);
        var (lm, head, rewardToken) = RewardModel.Load(model, dev);
        using (lm)
        using (head)
        using (Tape.NoGrad())
        {
            if (data is null)
            {
                var pair = new PreferencePair(Conversation(prompt!, response!), Conversation(prompt!, response!), "--prompt");
                var e = PreferenceData.Encode(pair, encoder, rewardToken);
                Console.WriteLine($"{RewardModel.Score(lm, head, e.Chosen.InputIds):F4}");
                return 0;
            }
            int right = 0, n = 0;
            foreach (var pair in PreferenceData.Read([data]))
            {
                var e = PreferenceData.Encode(pair, encoder, rewardToken);
                double c = RewardModel.Score(lm, head, e.Chosen.InputIds), r = RewardModel.Score(lm, head, e.Rejected.InputIds);
                Console.WriteLine($"{pair.Source}\tchosen {c:F4}\trejected {r:F4}\tmargin {c - r:F4}");
                if (c > r) right++;
                n++;
            }
            Console.WriteLine($"{n} pairs, chosen ranked higher in {right} ({(n == 0 ? 0 : (double)right / n):P1})");
            return 0;
        }
    }

    private static Conversation Conversation(string prompt, string response) => new([new Turn(null, prompt, response)], "--prompt");
}
