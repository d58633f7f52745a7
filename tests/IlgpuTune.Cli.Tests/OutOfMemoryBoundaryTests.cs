namespace IlgpuTune.Cli.Tests;

/// <summary>Running out of memory ends with one `error:` line, exit 2: ours says what was needed and what is available.</summary>
public class OutOfMemoryBoundaryTests
{
    [Fact]
    public void OurInsufficientMemory_PrintsItsMessage_TheRuntimesAGenericLine()
    {
        using var dir = new TestKit.TempDir();
        var ours = new StringWriter();
        const string message = "out of memory loading /m: its weights need about 25.1 GiB as loaded, and 12.0 GiB of memory is available; free memory";
        Assert.Equal(2, ErrorBoundary.Report(CliBoundaryTests.Catch(() => throw new InsufficientMemoryException(message)), ours, dir.Path));
        Assert.Equal($"error: {message}", ours.ToString().TrimEnd());
        var runtime = new StringWriter();
        Assert.Equal(2, ErrorBoundary.Report(new OutOfMemoryException(), runtime, dir.Path));
        Assert.Single(runtime.ToString().TrimEnd().Split('\n'));
        Assert.StartsWith("error: out of memory", runtime.ToString());
        Assert.Empty(Directory.GetFiles(dir.Path, "crash-*"));
    }
}
