using Xunit.Abstractions;

namespace IlgpuTune.Cli.Tests;

/// <summary>The error boundary and the command-line check: help, misspellings, and how each exception class ends.</summary>
public class CliBoundaryTests(ITestOutputHelper log)
{
    [Theory]
    [InlineData("--help")]
    [InlineData("train", "--help")]
    [InlineData("convert", "merge", "-h")]
    [InlineData("check-dataset", "--help")]
    public void Help_ExitsZero(params string[] args)
    {
        var (code, stdout, _) = CliRunner.Run(log, args);
        Assert.Equal(0, code);
        Assert.Contains("Usage: ilgpu-tune", stdout);
    }

    [Theory]
    [InlineData("did you mean '--work-dir'?", "train", "cfg.yaml", "--wrk-dir", "x")]
    [InlineData("did you mean '--max-shard-size'?", "convert", "merge", "a", "b", "c", "--max-shard", "2GB")]
    [InlineData("did you mean '--prompt-template'?", "chat", "model", "--promt-template", "qwen_chat")]
    [InlineData("did you mean 'train'?", "trian", "cfg.yaml")]
    [InlineData("did you mean 'quantize'?", "convert", "quantise", "a", "b")]
    [InlineData("'ilgpu-tune list-cfg --help' lists the options", "list-cfg", "--zzzzzzzz")]
    [InlineData("missing argument 'config'", "train")]
    [InlineData("option '--seed': expected an integer", "train", "cfg.yaml", "--seed", "abc")]
    [InlineData("--max-shard-size '2G': expected a positive size with a unit, e.g. 2GB", "convert", "merge", "/tmp", "/tmp", "/nonexistent/out", "--max-shard-size", "2G")]
    public void UsageMistakes_OneLine_NearestName_Exit2(string expected, params string[] args)
    {
        var (code, _, stderr) = CliRunner.Run(log, args);
        Assert.Equal(2, code);
        Assert.StartsWith("error: ", stderr);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    [Fact]
    public void ConvertAdapter_OnAWorkDir_NamesACheckpointInside()
    {
        using var dir = new TestKit.TempDir();
        Directory.CreateDirectory(Path.Combine(dir.Path, "iter_3"));
        File.WriteAllText(Path.Combine(dir.Path, "iter_3", "state.json"), "{}");
        var (code, _, stderr) = CliRunner.Run(log, "convert", "adapter", dir.Path, dir.File("out"));
        Assert.Equal(2, code);
        Assert.Contains($"{dir.Path} is a work dir; pass one of its checkpoints, e.g. {Path.Combine(dir.Path, "iter_3")}", stderr);
        Assert.False(Directory.Exists(dir.File("out")));
    }

    [Theory]
    [InlineData(typeof(InvalidDataException), "User")]
    [InlineData(typeof(NotSupportedException), "User")]
    [InlineData(typeof(FileNotFoundException), "User")]
    [InlineData(typeof(DirectoryNotFoundException), "User")]
    [InlineData(typeof(UnauthorizedAccessException), "Environment")]
    [InlineData(typeof(IOException), "Environment")]
    [InlineData(typeof(DllNotFoundException), "Environment")]
    [InlineData(typeof(EndOfStreamException), "Internal")]
    [InlineData(typeof(NullReferenceException), "Internal")]
    [InlineData(typeof(IndexOutOfRangeException), "Internal")]
    [InlineData(typeof(OperationCanceledException), "Interrupted")]
    public void Classify_ByType(Type type, string expected) =>
        Assert.Equal(expected, ErrorBoundary.Classify((Exception)Activator.CreateInstance(type, "m")!).ToString());

    [Fact]
    public void ArgumentExceptions_AreUserErrorsOnlyWhenOurCodeThrewThem()
    {
        // Ours: a message written for the user. The runtime's: a missing check, i.e. a bug.
        Assert.Equal(ErrorBoundary.Kind.User, ErrorBoundary.Classify(Catch(() => ConvertCommands.ParseDtype("float7"))));
        Assert.Equal(ErrorBoundary.Kind.Internal, ErrorBoundary.Classify(Catch(() => new Dictionary<string, int> { ["a"] = 1 }.Add("a", 2))));
        Assert.Equal(ErrorBoundary.Kind.Internal, ErrorBoundary.Classify(Catch(() => _ = new Dictionary<string, int>()["missing"])));
        Assert.Equal(ErrorBoundary.Kind.Internal, ErrorBoundary.Classify(Catch(() => int.Parse("x", System.Globalization.CultureInfo.InvariantCulture))));
    }

    [Fact]
    public void InternalError_OneLine_CrashLogHoldsTheStackTrace_Exit70()
    {
        using var dir = new TestKit.TempDir();
        var err = new StringWriter();
        var e = Catch(() => _ = ((string)null!).Length);
        Assert.Equal(70, ErrorBoundary.Report(new AggregateException(e), err, dir.Path));
        string line = err.ToString().TrimEnd();
        Assert.Single(line.Split('\n'));
        Assert.StartsWith("error: internal error (NullReferenceException: ", line);
        string logPath = line[(line.LastIndexOf(' ') + 1)..];
        Assert.StartsWith(dir.Path, logPath);
        string crash = File.ReadAllText(logPath);
        Assert.Contains("System.NullReferenceException", crash);
        Assert.Contains(nameof(InternalError_OneLine_CrashLogHoldsTheStackTrace_Exit70), crash); // the stack trace
    }

    [Fact]
    public void EnvironmentError_OneLine_NamesThePath_Exit2()
    {
        using var dir = new TestKit.TempDir();
        string file = dir.File("a-file");
        File.WriteAllText(file, "");
        var err = new StringWriter();
        // A folder wanted where a file is: .NET's message names the path.
        Assert.Equal(2, ErrorBoundary.Report(Catch(() => Directory.CreateDirectory(Path.Combine(file, "sub"))), err, dir.Path));
        Assert.StartsWith("error: ", err.ToString());
        Assert.Contains(file, err.ToString());
        Assert.Empty(Directory.GetFiles(dir.Path, "crash-*"));
    }

    /// <summary>The exception <paramref name="a"/> throws, with its stack trace (as ErrorBoundary gets it).</summary>
    internal static Exception Catch(Action a)
    {
        try
        {
            a();
        }
        catch (Exception e)
        {
            return e;
        }
        throw new InvalidOperationException("expected an exception");
    }
}
