using IlgpuTune.Core;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Core.Tests;

/// <summary>IOpBackend.HostOffload on ILGPU's CPU accelerator (copies run synchronously there: plumbing and exact bytes).</summary>
public class HostOffloadTests
{
    [Fact]
    public void Chain_FetchesEachTensorBack_Bitwise_InAnyStateOfItsUpload()
    {
        using var device = Device.Create("ilgpu-cpu");
        var host = device.Backend.HostOffload!;
        var chain = new OffloadChain(host);
        var data = Enumerable.Range(0, 3).Select(i => Rand.Floats(i + 1, 1000 + i * 300, 1f)).ToArray();
        var handles = data.Select(d => chain.Offload(Tensor.FromArray(device, d, d.Length))).ToArray();
        long held = device.Allocator.AllocatedBytes;
        // The last is still on the device; fetching it starts the upload of the one before, which is fetched next.
        for (int i = handles.Length - 1; i >= 0; i--)
        {
            using (var back = handles[i].Fetch()) Assert.Equal(data[i], back.ToFloatArray());
            using (var again = handles[i].Fetch()) Assert.Equal(data[i], again.ToFloatArray());
        }
        foreach (var h in handles) h.Dispose();
        Assert.Throws<ObjectDisposedException>(() => handles[0].Fetch());
        Assert.True(device.Allocator.AllocatedBytes < held, "the fetched tensors' device memory is freed with their handles");
        long pinned = host.HostBytes;
        Assert.Equal(data.Sum(d => CachingAllocator.RoundSize(d.Length * 4L)), pinned);

        // A second pass takes the same buffers; handles disposed unfetched (a tape cleared without backward) return theirs too.
        var second = new OffloadChain(host);
        var unfetched = data.Select(d => second.Offload(Tensor.FromArray(device, d, d.Length))).ToArray();
        foreach (var h in unfetched) h.Dispose();
        Assert.Equal(pinned, host.HostBytes);
        // A larger tensor than any buffer: the pool replaces its largest free buffer instead of growing by one.
        using (var big = new OffloadChain(host).Offload(Tensor.Zeros(device, DType.F32, 4000))) { }
        Assert.Equal(pinned - CachingAllocator.RoundSize(1600 * 4) + CachingAllocator.RoundSize(4000 * 4), host.HostBytes);
    }

    // Checkpoints in a row, storing their inputs in bf16 (as CausalLM does with bf16 matmuls), offloaded or kept: the same
    // outputs and gradients, and the offloaded inputs off the device between forward and backward.
    [Fact]
    public void OffloadedCheckpoints_EqualKeptOnes_Bitwise()
    {
        using var d = Device.Create("ilgpu-cpu");
        const int n = 4096, blocks = 4;
        var data = Rand.Floats(7, n);
        var weights = Enumerable.Range(0, blocks).Select(i => Rand.Floats(20 + i, n)).ToArray();
        var dy = Rand.Floats(8, n);
        (float[] Y, float[] Gx, float[][] Gw, long Held) Run(bool offload)
        {
            long start = d.Allocator.AllocatedBytes;
            using var x = Tensor.FromArray(d, data, n);
            x.RequiresGrad = true;
            var w = weights.Select(v => { var t = Tensor.FromArray(d, v, n); t.RequiresGrad = true; return t; }).ToArray();
            using var gy = Tensor.FromArray(d, dy, n);
            var chain = offload ? new OffloadChain(d.Backend.HostOffload!) : null;
            float[] y;
            long held;
            using (var tape = new Tape())
            {
                var h = x;
                for (int b = 0; b < blocks; b++)
                {
                    var r = Ops.RoundTo(h, DType.BF16);
                    if (b > 0) h.Dispose();
                    var wb = w[b];
                    h = Tape.Checkpoint(t =>
                    {
                        using var square = Ops.Mul(t[0], t[0]);
                        return Ops.Mul(square, wb);
                    }, DType.BF16, chain, r);
                    r.Dispose();
                }
                held = d.Allocator.AllocatedBytes - start;
                using (h)
                {
                    y = h.ToFloatArray();
                    tape.Backward(h, gy);
                }
            }
            var gw = w.Select(t => t.Grad!.ToFloatArray()).ToArray();
            var gx = x.Grad!.ToFloatArray();
            foreach (var t in w.Append(x)) t.Grad!.Dispose();
            foreach (var t in w) t.Dispose();
            return (y, gx, gw, held);
        }
        var kept = Run(false);
        var away = Run(true);
        Assert.Equal(kept.Y, away.Y);
        Assert.Equal(kept.Gx, away.Gx);
        for (int b = 0; b < blocks; b++) Assert.Equal(kept.Gw[b], away.Gw[b]);
        Assert.Equal((blocks - 1) * CachingAllocator.RoundSize(n * 2), kept.Held - away.Held);
    }

    [Fact]
    public void ManagedCpu_HasNoHostOffload()
    {
        using var d = Device.Create("cpu");
        Assert.Null(d.Backend.HostOffload);
    }
}
