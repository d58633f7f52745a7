using System.Globalization;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.TestKit;
using Xunit.Abstractions;

namespace IlgpuTune.Training.Tests;

// tests/fixtures/optim/adamw.safetensors, made by tools/golden/make_optim_golden.py with torch 2.11: torch.optim.AdamW
// (lr 1e-3 x per-iteration factors, betas (0.9, 0.999), eps 1e-8, wd 0.01) on three tensors through 6 iterations of
// GradScaler.unscale_ -> clip_grad_norm_(1.0) -> GradScaler.step -> GradScaler.update (growth_interval 3, an inf in
// iteration 2). Every intermediate is compared at 1e-6 relative.
[Collection(DevicesCollection.Name)]
public class TorchGoldenTests(Devices devices, ITestOutputHelper log)
{
    private double _worst;

    private static readonly int[][] Shapes = [[4, 3], [5], [2, 3, 2]];

    [Theory]
    [InlineData("cpu", false)]
    [InlineData("ilgpu-cpu", false)]
    [InlineData("ilgpu-cpu", true)]
    public void AdamW_GradScaler_ClipGradNorm_MatchTorch(string kind, bool paged)
    {
        var d = devices.Get(kind);
        using var f = SafetensorsFile.Open(Repo.Fixture("optim/adamw.safetensors"));
        var factors = f.Metadata["lr_factors"].Split(',').Select(s => double.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        var ps = Shapes.Select((s, i) => Tensor.FromArray(d, f.ReadFloat32($"param0.{i}"), s).Named($"p{i}")).ToArray();
        using var opt = new AdamW(ps, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, pagedState: paged);
        var scaler = new GradScaler(65536.0, 2.0, 0.5, growthInterval: 3);
        for (int k = 0; k < factors.Length; k++)
        {
            opt.Lr = 1e-3 * factors[k];
            Assert.Equal(f.ReadFloat32($"it{k}.inv_scale")[0], (float)(1.0 / scaler.Scale));
            for (int i = 0; i < ps.Length; i++) ps[i].Grad = Tensor.FromArray(d, f.ReadFloat32($"it{k}.grad_in.{i}"), ps[i].Shape);

            bool found = scaler.Unscale(opt);
            Assert.Equal(f.ReadFloat32($"it{k}.found_inf")[0] != 0, found);
            Compare(f, $"it{k}.grad_unscaled", ps.Select(p => p.Grad!.ToFloatArray()));

            float total = GradClipping.ClipGradNorm(ps, 1f);
            float want = f.ReadFloat32($"it{k}.total_norm")[0];
            if (float.IsInfinity(want)) Assert.Equal(want, total);
            else Assert.Equal(want, total, want * 1e-6);
            if (float.IsFinite(want)) _worst = Math.Max(_worst, Math.Abs(total - want) / want);
            Compare(f, $"it{k}.grad_clipped", ps.Select(p => p.Grad!.ToFloatArray()));

            Assert.Equal(!found, scaler.Step(opt));
            scaler.Update();
            Assert.Equal(f.ReadFloat32($"it{k}.scale")[0], scaler.Scale);
            Assert.Equal(f.ReadFloat32($"it{k}.growth_tracker")[0], scaler.GrowthTracker);

            var state = opt.ExportState().ToDictionary(kv => kv.Key, kv => kv.Value);
            Compare(f, $"it{k}.param", ps.Select(p => p.ToFloatArray()));
            Compare(f, $"it{k}.exp_avg", ps.Select(p => state[$"{p.Name}.exp_avg"]));
            Compare(f, $"it{k}.exp_avg_sq", ps.Select(p => state[$"{p.Name}.exp_avg_sq"]));
            for (int i = 0; i < ps.Length; i++) Assert.Equal(f.ReadFloat32($"it{k}.step.{i}")[0], state[$"p{i}.step"][0]);
            opt.ZeroGrad();
        }
        foreach (var p in ps) p.Dispose();
        log.WriteLine($"{kind}{(paged ? " paged" : "")}: worst error {_worst:G3} relative to each tensor's largest element");
    }

    private void Compare(SafetensorsFile f, string prefix, IEnumerable<float[]> actual)
    {
        int i = 0;
        foreach (var a in actual)
        {
            var e = f.ReadFloat32($"{prefix}.{i}");
            Assert.Equal(e.Length, a.Length);
            double scale = e.Where(float.IsFinite).Select(x => (double)Math.Abs(x)).DefaultIfEmpty(0).Max();
            for (int j = 0; j < e.Length; j++)
            {
                if (e[j].Equals(a[j])) continue; // exact, inf and NaN included
                double err = Math.Abs((double)a[j] - e[j]) / Math.Max(scale, 1e-30);
                _worst = Math.Max(_worst, err);
                Assert.True(err <= 1e-6, $"{prefix}.{i}[{j}]: {a[j]:G9}, torch {e[j]:G9} ({err:G3} of the largest element)");
            }
            i++;
        }
    }
}
