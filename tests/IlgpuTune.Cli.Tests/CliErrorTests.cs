using Xunit.Abstractions;

namespace IlgpuTune.Cli.Tests;

/// <summary>Bad input gets one clear line naming what is wrong and exit code 2 — never a stack trace.</summary>
public class CliErrorTests(ITestOutputHelper log)
{
    [Theory]
    [InlineData("no such config file", "train", "no_such_config.yaml")]
    [InlineData("key 'lr': expected a number, got 'fast'", "train", "tiny_llama_lora_colorist_e3", "--cfg-options", "lr=fast")]
    [InlineData("unknown key 'learning_rate'", "train", "tiny_llama_lora_colorist_e3", "--cfg-options", "learning_rate=1")]
    [InlineData("no built-in config 'nope'", "copy-cfg", "nope", "/tmp")]
    [InlineData("not a checkpoint folder", "train", "tiny_llama_lora_colorist_e3", "--resume", "/nonexistent/iter_5")]
    [InlineData("model folder /nonexistent/base does not exist", "convert", "merge", "/nonexistent/base", "/nonexistent/adapter", "/tmp/out-merge")]
    [InlineData("model folder /nonexistent/base does not exist", "convert", "quantize", "/nonexistent/base", "/tmp/out-quantize")]
    [InlineData("quant type 'nf8': expected nf4 or fp4", "convert", "quantize", "/nonexistent/base", "/tmp/out-quantize", "--quant-type", "nf8")]
    public void ExpectedErrors_PrintOneLine_AndExit2(string expected, params string[] args)
    {
        var (code, _, stderr) = CliRunner.Run(log, args);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr);
        Assert.DoesNotContain("   at ", stderr);
    }
}
