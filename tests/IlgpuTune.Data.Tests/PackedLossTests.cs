using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Packing;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Model;

namespace IlgpuTune.Data.Tests;

/// <summary>
/// A packed row gives every sample exactly the loss it has alone: real samples (tiny SentencePiece tokenizer, XTuner
/// llama2_chat template) are packed, run through a random tiny Llama on the engine's CPU path with segment ids from the
/// cumulative lengths and per-sample positions, and compared with each sample run alone.
/// </summary>
public class PackedLossTests
{
    [Fact]
    public void PackedRowsGiveEachSampleItsUnpackedLoss()
    {
        var tok = SentencePieceModelTokenizer.FromModel(File.ReadAllBytes(Fixtures.Path("tiny-sp-bpe.model")));
        var (convs, _) = DatasetReader.Read(Fixtures.Path("xtuner-conversations.json"), DatasetFormat.Conversation);
        var encoder = new XtunerEncoder(tok, XtunerTemplates.Get("llama2_chat"), maxLength: 96);
        var samples = convs.Select(encoder.Encode).ToList();
        var (rows, _) = Packer.Pack(samples, maxLength: 160, shuffleBeforePack: true, seed: 5);
        Assert.Contains(rows, r => r.SampleIndices.Length >= 2);

        var config = ModelConfig.FromJson(JsonNode.Parse("""
            {"model_type": "llama", "vocab_size": 700, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}
            """)!.AsObject(), "tiny");
        using var device = Device.Create("cpu");
        using var model = CausalLM.CreateRandom(config, device, seed: 11);
        int compared = 0;
        foreach (var row in rows.Where(r => r.SampleIndices.Length >= 2))
        {
            int n = row.InputIds.Length;
            var segments = new int[n];
            for (int k = 0; k < row.SampleIndices.Length; k++)
                for (int t = row.CumulativeLengths[k]; t < row.CumulativeLengths[k + 1]; t++) segments[t] = k;

            double weighted = 0;
            int supervised = 0;
            for (int k = 0; k < row.SampleIndices.Length; k++)
            {
                var alone = samples[row.SampleIndices[k]];
                float lossAlone = Loss(model, alone.InputIds, alone.Labels, null, null);

                // The same sample inside the packed row: only its labels kept.
                var labels = Enumerable.Repeat(EncodedSample.IgnoreIndex, n).ToArray();
                for (int t = row.CumulativeLengths[k]; t < row.CumulativeLengths[k + 1]; t++) labels[t] = row.Labels[t];
                float lossPacked = Loss(model, row.InputIds, labels, row.PositionIds, segments);
                // Bit-exact: every op of the CPU path is row-wise or segment-masked, so other samples cannot leak in.
                Assert.Equal(lossAlone, lossPacked);

                int targets = CausalLM.ShiftLabels(alone.Labels, 1, alone.InputIds.Length).Count(l => l >= 0);
                weighted += (double)lossAlone * targets;
                supervised += targets;
                compared++;
            }
            // The row's loss (mean over all its supervised tokens) is the token-weighted mean of the samples' losses.
            float rowLoss = Loss(model, row.InputIds, row.Labels, row.PositionIds, segments);
            Assert.Equal(weighted / supervised, rowLoss, 1e-5);
        }
        Assert.True(compared >= 2);
    }

    static float Loss(CausalLM model, int[] ids, int[] labels, int[]? positions, int[]? segments)
    {
        using var noGrad = Tape.NoGrad();
        var (logits, loss) = model.ForwardWithLoss(ids, labels, 1, ids.Length, positions, segments);
        using (logits)
        using (loss)
            return loss.ToFloatArray()[0];
    }
}
