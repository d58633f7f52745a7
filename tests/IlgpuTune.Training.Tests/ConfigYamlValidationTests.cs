using IlgpuTune.Training;

namespace IlgpuTune.Training.Tests;

/// <summary>
/// YAML configs of any node shape end in one ConfigException naming the file, line and column (or the --cfg-options
/// entry): issue 13 found a complex key an InvalidCastException, an unclosed '[' "Operation is not valid due to the
/// current state of the object.", a tab reported at 1:1 and a bad --cfg-options key reported at the config's line 1.
/// </summary>
public class ConfigYamlValidationTests
{
    private const string Minimal = "pretrained_model_name_or_path: /models/x\ndata_path: data.jsonl\n";

    private static ConfigException Bad(string yaml, string expected, params string[] overrides)
    {
        var e = Assert.Throws<ConfigException>(() => TrainConfig.Parse(yaml, "conv.yaml", overrides));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("Operation is not valid", e.Message);
        return e;
    }

    [Theory]
    [InlineData("? [a]\n: 1\n", "conv.yaml:3:3: keys must be plain names")]
    [InlineData("? {a: 1}\n: 1\n", "conv.yaml:3:3: keys must be plain names")]
    [InlineData("lora:\n  ? [r]\n  : 8\n", "conv.yaml:4: key 'lora': keys must be plain names")]
    public void ComplexKeysAreRefusedAtTheirLine(string tail, string expected) => Bad(Minimal + tail, expected);

    [Theory]
    [InlineData("lr: [1e-4\n", "conv.yaml:")]
    [InlineData("lr: {a: 1\n", "conv.yaml:")]
    [InlineData("lr: 'unterminated\n", "conv.yaml:")]
    [InlineData("lr: *nowhere\n", "conv.yaml:3:5")]
    [InlineData("lr: [", "conv.yaml")]
    [InlineData("lr: [1, {a: [", "conv.yaml")]
    [InlineData("[", "conv.yaml")]
    [InlineData("- a\n", "conv.yaml:3")]
    public void SyntaxErrorsNameTheFileAndLine(string tail, string expected)
    {
        var e = Bad(Minimal + tail, expected);
        Assert.Contains("invalid YAML", e.Message);
    }

    [Fact]
    public void ATabIsReportedWhereItIs()
    {
        var e = Bad(Minimal + "lora:\n\tr: 8\n", "conv.yaml:4:1:");
        Assert.Contains("tab", e.Message);
    }

    [Fact]
    public void DuplicateKeysAndOtherShapesAreNamed()
    {
        Bad(Minimal + "lr: 1\nlr: 2\n", "conv.yaml:4:1: invalid YAML: Duplicate key");
        Bad("[1, 2]\n", "conv.yaml: expected a mapping");
        Bad(Minimal + "lora: [1]\n", "conv.yaml:3: key 'lora': expected a mapping");
        Bad(Minimal + "lr: [1]\n", "key 'lr': expected a number, got sequence");
        Bad(Minimal + "evaluation_inputs: {a: 1}\n", "conv.yaml:3: key 'evaluation_inputs'");
        Bad(Minimal + "lr: !!binary aGk=\n", "key 'lr'");
    }

    [Fact]
    public void CfgOptionsErrorsNameTheOptionNotTheFile()
    {
        var e = Bad(Minimal, "--cfg-options 'batch_sise=2': unknown key 'batch_sise'", "batch_sise=2");
        Assert.DoesNotContain("conv.yaml:1", e.Message);
        e = Bad(Minimal + "lora: {r: 8}\n", "--cfg-options 'lora.r=abc': key 'lora'.r: expected an integer", "lora.r=abc");
        Assert.DoesNotContain("conv.yaml", e.Message);
        Bad(Minimal, "--cfg-options 'lr': expected key=value", "lr");
        Bad(Minimal, "--cfg-options 'lora..r=1'", "lora..r=1");
        Bad(Minimal, "--cfg-options 'lr=[1': ", "lr=[1");   // a value that does not parse is a string: not a number
    }
}
