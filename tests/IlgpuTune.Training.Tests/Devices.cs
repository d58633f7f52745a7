using IlgpuTune.Core;

namespace IlgpuTune.Training.Tests;

/// <summary>The managed CPU device and an ILGPU CPU accelerator (runs the kernels), shared by the tests.</summary>
public sealed class Devices : IDisposable
{
    private readonly Lazy<Device> _cpu = new(() => Device.Create("cpu"));
    private readonly Lazy<Device> _ilgpu = new(() => Device.Create("ilgpu-cpu"));

    public Device Get(string kind) => kind switch
    {
        "cpu" => _cpu.Value,
        "ilgpu-cpu" => _ilgpu.Value,
        _ => throw new ArgumentException(kind),
    };

    public void Dispose()
    {
        if (_cpu.IsValueCreated) _cpu.Value.Dispose();
        if (_ilgpu.IsValueCreated) _ilgpu.Value.Dispose();
    }
}

[CollectionDefinition(Name)]
public sealed class DevicesCollection : ICollectionFixture<Devices>
{
    public const string Name = "devices";
}
