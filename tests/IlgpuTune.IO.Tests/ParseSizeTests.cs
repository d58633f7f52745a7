namespace IlgpuTune.IO.Tests;

public class ParseSizeTests
{
    [Theory]
    [InlineData("2GB", 2_000_000_000L)]
    [InlineData("500MB", 500_000_000L)]
    [InlineData("10KB", 10_000L)]
    [InlineData("5TB", 5_000_000_000_000L)]
    [InlineData("50GB", 50_000_000_000L)]
    [InlineData("1.5GB", 1_500_000_000L)]
    [InlineData(" 5 gb ", 5_000_000_000L)]
    [InlineData("4096", 4096L)]
    [InlineData("4096B", 4096L)]
    [InlineData("1KiB", 1024L)]
    [InlineData("3MiB", 3L << 20)]
    [InlineData("2GiB", 2L << 30)]
    [InlineData("1TiB", 1L << 40)]
    [InlineData("0.5KiB", 512L)]
    [InlineData("1.0001KB", 1000L)]
    public void ParseSize_Units(string s, long expected) => Assert.Equal(expected, SafetensorsWriter.ParseSize(s));

    [Theory]
    [InlineData("")]
    [InlineData("GB")]
    [InlineData("five GB")]
    [InlineData("-1GB")]
    [InlineData("5XB")]
    [InlineData("1e3")]
    public void ParseSize_RejectsGarbage(string s) => Assert.Throws<FormatException>(() => SafetensorsWriter.ParseSize(s));
}
