using IlgpuTune.Core;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO.Tests;

/// <summary>OrderedPipeline and SafetensorsWriter.WriteShardedParallel: in-order hand-over, the budget and parallelism
/// bounds, failures surfacing at their item, and the same files as the sequential writer.</summary>
public class OrderedPipelineTests
{
    [Fact]
    public void Take_GivesItemsInOrder_WithinTheBudgetAndParallelism()
    {
        int started = 0, running = 0, maxRunning = 0, maxAhead = 0, taken = 0;
        var items = Enumerable.Range(0, 40).ToList();
        using (var pipeline = new OrderedPipeline<int>(items, i =>
               {
                   int s = Interlocked.Increment(ref started), r = Interlocked.Increment(ref running);
                   lock (items)
                   {
                       maxRunning = Math.Max(maxRunning, r);
                       maxAhead = Math.Max(maxAhead, s - Volatile.Read(ref taken));
                   }
                   Thread.Sleep(i % 3);
                   Interlocked.Decrement(ref running);
                   return new[] { (byte)i };
               }, _ => 10, budgetBytes: 30, parallelism: 2))
        {
            foreach (var i in items)
            {
                Volatile.Write(ref taken, i);
                Assert.Equal((byte)i, pipeline.Take(i).Span[0]);
            }
        }
        Assert.Equal(40, started);
        Assert.InRange(maxRunning, 1, 2);
        Assert.InRange(maxAhead, 1, 3); // items taken..taken+2 held: 3 × 10 bytes
    }

    [Fact]
    public void Take_AnItemOverTheBudget_RunsAlone()
    {
        int running = 0, maxRunning = 0;
        var gate = new object();
        using var pipeline = new OrderedPipeline<int>([0, 1, 2, 3], i =>
        {
            int r = Interlocked.Increment(ref running);
            lock (gate) maxRunning = Math.Max(maxRunning, r);
            Thread.Sleep(2);
            Interlocked.Decrement(ref running);
            return new byte[i + 1];
        }, _ => 100, budgetBytes: 30, parallelism: 4);
        for (int i = 0; i < 4; i++) Assert.Equal(i + 1, pipeline.Take(i).Length);
        Assert.Equal(1, maxRunning);
    }

    [Fact]
    public void Take_RethrowsAProducersException_AtItsItem_AndDisposeWaitsForTheRest()
    {
        int running = 0;
        var pipeline = new OrderedPipeline<int>([.. Enumerable.Range(0, 10)], i =>
        {
            Interlocked.Increment(ref running);
            Thread.Sleep(3);
            Interlocked.Decrement(ref running);
            return i == 4 ? throw new InvalidDataException("item 4 is bad") : new byte[1];
        }, _ => 1, budgetBytes: 1000, parallelism: 3);
        for (int i = 0; i < 4; i++) pipeline.Take(i);
        var e = Assert.Throws<InvalidDataException>(() => pipeline.Take(4));
        Assert.Equal("item 4 is bad", e.Message);
        pipeline.Dispose();
        Assert.Equal(0, Volatile.Read(ref running));
        Assert.Throws<InvalidOperationException>(() => pipeline.Take(2));
    }

    [Fact]
    public void WriteShardedParallel_WritesTheSequentialWritersFiles()
    {
        var rng = new Random(3);
        var tensors = Enumerable.Range(0, 23).Select(i =>
        {
            var dtype = i % 3 == 0 ? DType.F32 : i % 3 == 1 ? DType.BF16 : DType.U8;
            long n = 1 + rng.Next(300);
            var data = new byte[n * dtype.Size()];
            rng.NextBytes(data);
            return new TensorToWrite($"t.{i}.weight", dtype, [n], data);
        }).ToList();
        using var eager = new TempDir();
        using var parallel = new TempDir();
        var written = SafetensorsWriter.WriteSharded(eager.Path, "model", tensors, 1500);
        var byName = tensors.ToDictionary(t => t.Name);
        int asked = 0;
        var written2 = SafetensorsWriter.WriteShardedParallel(parallel.Path, "model",
            tensors.Select(t => new TensorSpec(t.Name, t.DType, t.Shape)).ToList(), 1500, spec =>
            {
                Interlocked.Increment(ref asked);
                Thread.Sleep(1);
                return byName[spec.Name].Data;
            }, new WritePipeline(BudgetBytes: 2000, Parallelism: 3));
        Assert.True(written.Count > 3);
        Assert.Equal(written, written2);
        Assert.Equal(tensors.Count, asked);
        foreach (var f in written) Assert.Equal(File.ReadAllBytes(eager.File(f)), File.ReadAllBytes(parallel.File(f)));
    }

    [Fact]
    public void WriteShardedParallel_AFailingProducer_LeavesNoPartialFile()
    {
        using var dir = new TempDir();
        var specs = Enumerable.Range(0, 8).Select(i => new TensorSpec($"w{i}", DType.U8, [100])).ToList();
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsWriter.WriteShardedParallel(dir.Path, "model", specs, 250,
            spec => spec.Name == "w5" ? throw new InvalidDataException("w5 unreadable") : new byte[100], new WritePipeline(1000, 2)));
        Assert.Equal("w5 unreadable", e.Message);
        Assert.DoesNotContain(dir.FileNames(), f => f.Contains("00003", StringComparison.Ordinal) || f.EndsWith(".json", StringComparison.Ordinal));
    }
}
