using BenchmarkDotNet.Attributes;
using IlgpuTune.Core;
using IlgpuTune.Model;
using System.Text.Json.Nodes;

namespace IlgpuTune.Benchmarks.Ops;

/// <summary>Forward + backward of a small Llama on the managed CPU path (tokens/s = Batch*Seq / mean time).</summary>
[MemoryDiagnoser]
public class TrainStepBench
{
    private Device _device = null!;
    private CausalLM _model = null!;
    private int[] _ids = [];

    [Params(128)]
    public int Seq { get; set; }

    public int Batch => 4;

    [GlobalSetup]
    public void Setup()
    {
        _device = Device.Create("cpu");
        var config = ModelConfig.FromJson(JsonNode.Parse("""
            {"model_type":"llama","vocab_size":1024,"hidden_size":256,"intermediate_size":688,"num_hidden_layers":4,
             "num_attention_heads":8,"num_key_value_heads":4}
            """)!.AsObject(), "bench");
        _model = CausalLM.CreateRandom(config, _device, seed: 1);
        _model.SetFullFineTuning();
        var r = new Random(2);
        _ids = Enumerable.Range(0, Batch * Seq).Select(_ => r.Next(1024)).ToArray();
    }

    [Benchmark]
    public float ForwardBackward()
    {
        using var tape = new Tape();
        var (logits, loss) = _model.ForwardWithLoss(_ids, _ids, Batch, Seq);
        using (logits)
        using (loss)
        {
            tape.Backward(loss);
            _model.ZeroGrad();
            return loss.Item();
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _model.Dispose();
        _device.Dispose();
    }
}
