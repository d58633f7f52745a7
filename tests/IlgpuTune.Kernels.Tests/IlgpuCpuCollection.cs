using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

// xunit needs collection definitions in the test assembly itself.
[CollectionDefinition(Name)]
public sealed class IlgpuCpuCollection : ICollectionFixture<IlgpuCpuFixture>
{
    public const string Name = "ilgpu-cpu";
}
