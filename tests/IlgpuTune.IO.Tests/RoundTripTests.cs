using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Core;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.IO.Tests;

public class RoundTripTests
{
    [Fact]
    public void AllDTypes_ScalarsAndZeroSize_RoundTrip()
    {
        using var dir = new TempDir();
        var f32 = Rand.Floats(1, 6, 3f);
        var halfSource = Rand.Floats(2, 5, 10f);
        var f16 = halfSource.Select(HalfBits.FloatToF16).ToArray();
        var bf16 = halfSource.Select(HalfBits.FloatToBf16).ToArray();
        int[] i32 = [int.MinValue, -1, 0, 1, int.MaxValue, 12345];
        byte[] u8 = [0, 1, 127, 128, 255];
        var tensors = new[]
        {
            SafetensorsWriter.F32("f32", f32, 2, 3),
            new TensorToWrite("f16", DType.F16, [5], Bytes.Of(f16)),
            new TensorToWrite("bf16", DType.BF16, [5, 1], Bytes.Of(bf16)),
            SafetensorsWriter.I32("i32", i32, 3, 2),
            new TensorToWrite("u8", DType.U8, [5], u8),
            SafetensorsWriter.F32("scalar_f32", [3.5f]),
            SafetensorsWriter.I32("scalar_i32", [-7]),
            SafetensorsWriter.F32("empty_f32", [], 0),
            new TensorToWrite("empty_bf16", DType.BF16, [3, 0, 2], Array.Empty<byte>()),
            new TensorToWrite("empty_u8", DType.U8, [0], Array.Empty<byte>()),
        };
        string path = dir.File("all.safetensors");
        SafetensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["step"] = "10" });

        using var file = SafetensorsFile.Open(path);
        Assert.Equal(path, file.Path);
        Assert.Equal(new Dictionary<string, string> { ["format"] = "pt", ["step"] = "10" }, file.Metadata);
        Assert.Equal(tensors.Length, file.Tensors.Count);
        foreach (var t in tensors)
        {
            var info = file.Get(t.Name);
            Assert.Equal(t.DType.SafetensorsName(), info.DType);
            Assert.Equal(t.Shape, info.Shape);
            Assert.Equal(t.Data.ToArray(), file.GetBytes(t.Name).ToArray());
            Assert.Equal(t.Shape.Aggregate(1L, (a, b) => a * b), info.ElementCount);
        }
        Assert.Equal(f32, file.ReadFloat32("f32"));
        Assert.Equal(f16.Select(HalfBits.F16ToFloat), file.ReadFloat32("f16"));
        Assert.Equal(bf16.Select(HalfBits.Bf16ToFloat), file.ReadFloat32("bf16"));
        Assert.Equal(i32, file.ReadInt32("i32"));
        Assert.Equal(u8.Select(b => (int)b), file.ReadInt32("u8"));
        Assert.Equal(u8.Select(b => (float)b), file.ReadFloat32("u8"));
        Assert.Equal([3.5f], file.ReadFloat32("scalar_f32"));
        Assert.Empty(file.Get("scalar_f32").Shape);
        Assert.Equal(1, file.Get("scalar_i32").ElementCount);
        Assert.Equal([-7], file.ReadInt32("scalar_i32"));
        Assert.Empty(file.ReadFloat32("empty_f32"));
        Assert.Empty(file.ReadFloat32("empty_bf16"));
        Assert.Empty(file.ReadInt32("empty_u8"));
        Assert.Equal(0, file.Get("empty_bf16").ElementCount);
    }

    [Fact]
    public void Tensors_AreInOffsetOrder()
    {
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        SafetensorsWriter.Write(path, [
            new TensorToWrite("u", DType.U8, [1], new byte[] { 1 }),
            SafetensorsWriter.F32("f", [1f, 2f], 2),
            new TensorToWrite("h", DType.BF16, [1], new byte[2]),
        ]);
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(["f", "h", "u"], file.Tensors.Select(t => t.Name));
        long end = 0;
        foreach (var t in file.Tensors)
        {
            Assert.Equal(end, t.Begin);
            end = t.End;
        }
    }

    [Fact]
    public void MetadataAndNames_WithEscapesAndUnicode_RoundTrip()
    {
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        string[] names = ["q\"uote", "back\\slash", "new\nline\ttab", "ctl\u0001\u001f\u007f", "ünï/cødé.😀", "a.b-c_d"];
        var metadata = new Dictionary<string, string> { ["k\"ey"] = "v\\al\nue", ["empty"] = "", ["üni"] = "😀" };
        SafetensorsWriter.Write(path, names.Select((n, i) => SafetensorsWriter.I32(n, [i])), metadata);
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(names.Order(StringComparer.Ordinal), file.Tensors.Select(t => t.Name).Order(StringComparer.Ordinal));
        for (int i = 0; i < names.Length; i++) Assert.Equal([i], file.ReadInt32(names[i]));
        Assert.Equal(4, file.Metadata.Count);
        foreach (var (k, v) in metadata) Assert.Equal(v, file.Metadata[k]);
    }

    [Property(MaxTest = 40)]
    public Property RandomTensors_RoundTripBytes()
    {
        var dtypes = new[] { DType.F32, DType.F16, DType.BF16, DType.I32, DType.U8 };
        var shape = from rank in Gen.Choose(0, 3)
                    from dims in Gen.Choose(0, 4).ArrayOf(rank)
                    select dims.Select(d => (long)d).ToArray();
        var tensor = from s in shape from d in Gen.Elements(dtypes) from seed in Gen.Choose(0, 100000) select (s, d, seed);
        return Prop.ForAll(tensor.ArrayOf().ToArbitrary(), specs =>
        {
            using var dir = new TempDir();
            var tensors = specs.Select((spec, i) =>
            {
                var data = new byte[spec.s.Aggregate(1L, (a, b) => a * b) * spec.d.Size()];
                new Random(spec.seed).NextBytes(data);
                return new TensorToWrite($"t{i}", spec.d, spec.s, data);
            }).ToArray();
            string path = dir.File("p.safetensors");
            SafetensorsWriter.Write(path, tensors);
            using var file = SafetensorsFile.Open(path);
            foreach (var t in tensors)
            {
                var info = file.Get(t.Name);
                if (info.DType != t.DType.SafetensorsName() || !info.Shape.SequenceEqual(t.Shape)
                    || !file.GetBytes(t.Name).SequenceEqual(t.Data.Span))
                    return false;
            }
            return file.Tensors.Count == tensors.Length;
        });
    }
}
