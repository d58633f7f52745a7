// The device decides once (Device picks the backend and computes DeviceCaps): op glue, the model and the trainer never
// ask which kind of device they run on. This test reads their sources and fails on any such question.
using System.Text.RegularExpressions;
using IlgpuTune.TestKit;

namespace IlgpuTune.Core.Tests;

public class LayeringTests
{
    // IsCpu, Kind == / !=, DeviceKind.X, IsEmulated, `is CudaAccelerator`, a branch on an accelerator type, the old
    // MatmulPrecision spelling.
    private static readonly Regex DeviceKindCheck = new(
        @"\bIsCpu\b|\.Kind\s*(==|!=)|DeviceKind\.(Cpu|Cuda|IlgpuCpu)|\bIsEmulated\b|\bis\s+(not\s+)?(Cuda|CPU)Accelerator\b|\bMatmulPrecision\b");

    [Theory]
    [InlineData("src/IlgpuTune.Core/Ops")]
    [InlineData("src/IlgpuTune.Model")]
    [InlineData("src/IlgpuTune.Training")]
    public void GlueModelAndTrainer_DoNotAskWhichDeviceTheyRunOn(string folder)
    {
        var dir = Path.Combine(Repo.Root, folder);
        var files = Directory.EnumerateFiles(dir, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") &&
                        !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"))
            .ToList();
        Assert.NotEmpty(files);
        var hits = files.SelectMany(f => File.ReadLines(f).Select((line, i) => (f, i, line)))
            .Where(h => DeviceKindCheck.IsMatch(h.line))
            .Select(h => $"{Path.GetRelativePath(Repo.Root, h.f)}:{h.i + 1}: {h.line.Trim()}")
            .ToList();
        Assert.True(hits.Count == 0, "device-kind checks outside Device/backends:\n" + string.Join("\n", hits));
    }

    [Fact]
    public void TheCheck_FindsWhatItLooksFor()
    {
        Assert.Matches(DeviceKindCheck, "if (x.Device.IsCpu) Foo();");
        Assert.Matches(DeviceKindCheck, "if (device.Kind == DeviceKind.Cuda)");
        Assert.Matches(DeviceKindCheck, "k.Accelerator is CudaAccelerator { }");
        Assert.DoesNotMatch(DeviceKindCheck, "dev.Backend.MatMul(GemmLayout.NT, shape, x, w, bias, 1f, false, y);");
    }
}
