using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Core;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.IO.Tests;

/// <summary>pytorch_model.bin reading: real torch.save files (tools/golden/make_torch_bin.py), hand-built pickles of the
/// exact shape torch emits, and hostile pickles that must be refused.</summary>
public class TorchCheckpointTests
{
    private static string Gold(string name) => Repo.Fixture("torch/" + name);

    // make_tensors() order in the golden script.
    private static readonly string[] TensorNames =
    [
        "f32", "f16", "bf16", "f64", "i64", "i32", "i16", "i8", "u8", "bool", "scalar", "empty", "base", "row_slice",
        "col_slice", "transposed", "permuted", "expanded", "half_view", "tied_a", "tied_b", "param",
    ];

    private static void AssertSameTensors(IWeightSource actual, string expectedSafetensors, IReadOnlyList<string> names)
    {
        using var expected = SafetensorsModel.Open(expectedSafetensors);
        Assert.Equal(names, actual.Names);
        foreach (var n in names)
        {
            Assert.Equal(expected.Get(n).Shape, actual.Shape(n));
            Assert.Equal(expected.Get(n).DType, actual.DTypeOf(n));
            Assert.Equal(expected.ReadFloat32(n), actual.ReadFloat32(n));
            if (ElementConvert.CanReadAsInt32(expected.Get(n).DType)) Assert.Equal(expected.ReadInt32(n), actual.ReadInt32(n));
        }
    }

    [Theory]
    [InlineData("tensors.bin")]        // zip, protocol 2
    [InlineData("tensors_legacy.bin")] // _use_new_zipfile_serialization=False
    [InlineData("tensors_p4.bin")]     // zip, pickle_protocol=4
    public void TorchSave_EveryDtypeViewAndSharedStorage_ReadsAsTorchWroteIt(string file)
    {
        using var ckpt = TorchCheckpoint.Open(Gold(file));
        AssertSameTensors(ckpt, Gold("tensors.safetensors"), TensorNames);
    }

    [Fact]
    public void ModuleStateDict_OrderedDictWithMetadataBuild_Reads()
    {
        using var ckpt = TorchCheckpoint.Open(Gold("module.bin"));
        AssertSameTensors(ckpt, Gold("module.safetensors"),
        [
            "0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "3.weight", "3.bias", "3.running_mean", "3.running_var",
            "3.num_batches_tracked",
        ]);
    }

    [Fact]
    public void TorchSaveOfOsSystem_IsRefusedWithoutRunningIt()
    {
        const string marker = "/tmp/ilgpu-tune-pwned";
        File.Delete(marker);
        var e = Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Open(Gold("evil.bin")));
        Assert.Contains("evil.bin", e.Message);
        Assert.Contains("GLOBAL 'posix.system' is not allowed", e.Message);
        Assert.Matches("at offset [0-9]+", e.Message);
        Assert.False(File.Exists(marker));
    }

    [Theory]
    [InlineData("llama")]        // two zip shards + pytorch_model.bin.index.json, plain dicts
    [InlineData("llama_legacy")] // one legacy file, model.state_dict()
    public void TinyLlama_TorchCheckpoints_EqualTheSafetensorsWeights(string dir)
    {
        using var ckpt = WeightSource.Open(Gold(dir));
        Assert.IsType<TorchCheckpoint>(ckpt);
        using var st = SafetensorsModel.Open(Repo.Fixture("tiny/llama"));
        Assert.Equal(st.Names.Order(StringComparer.Ordinal), ckpt.Names.Order(StringComparer.Ordinal));
        foreach (var n in st.Names)
        {
            Assert.Equal(st.Shape(n), ckpt.Shape(n));
            Assert.Equal(st.ReadFloat32(n), ckpt.ReadFloat32(n));
        }
    }

    [Fact]
    public void WeightSource_PrefersSafetensorsThenIndexThenBin()
    {
        using var dir = new TempDir();
        File.Copy(Gold("llama_legacy/pytorch_model.bin"), dir.File("pytorch_model.bin"));
        using (var s = WeightSource.Open(dir.Path)) Assert.IsType<TorchCheckpoint>(s);
        File.Copy(Repo.Fixture("tiny/llama/model.safetensors"), dir.File("model.safetensors"));
        using (var s = WeightSource.Open(dir.Path)) Assert.IsType<SafetensorsModel>(s);
        File.Delete(dir.File("pytorch_model.bin"));
        File.Delete(dir.File("model.safetensors"));
        var e = Assert.Throws<FileNotFoundException>(() => WeightSource.Open(dir.Path));
        Assert.Contains("pytorch_model.bin.index.json", e.Message);
    }

    // ---- hand-built files ----

    private static string Zip(TempDir dir, byte[] pickle, Dictionary<string, byte[]> records, string prefix = "archive",
        string byteorder = "little")
    {
        string path = dir.File(Guid.NewGuid().ToString("N") + ".bin");
        TorchFiles.WriteZip(path, pickle, records, prefix, byteorder);
        return path;
    }

    [Fact]
    public void HandBuilt_SharedStorageOffsetsStridesAndCustomPrefix()
    {
        using var dir = new TempDir();
        var data = Enumerable.Range(0, 12).Select(i => i * 1.5f).ToArray();
        var pickle = TorchFiles.StateDictPickle(
        [
            ("w", new FakeTensor("FloatStorage", "0", 12, 0, [3, 4], [4, 1])),
            ("w_t", new FakeTensor("FloatStorage", "0", 12, 0, [4, 3], [1, 4])),     // transpose: same storage
            ("row", new FakeTensor("FloatStorage", "0", 12, 4, [4], [1])),           // offset
            ("col", new FakeTensor("FloatStorage", "0", 12, 2, [3], [4])),           // strided column
            ("bcast", new FakeTensor("FloatStorage", "0", 12, 5, [2, 3], [0, 1])),   // stride 0
            ("ids", new FakeTensor("LongStorage", "1", 3, 0, [3], [1])),
        ]);
        var path = Zip(dir, pickle, new() { ["0"] = Bytes.Of(data), ["1"] = Bytes.Of(7L, -8L, 1L << 40) }, prefix: "my model");
        using var c = TorchCheckpoint.Open(path);
        Assert.Equal(["w", "w_t", "row", "col", "bcast", "ids"], c.Names);
        Assert.Equal(data, c.ReadFloat32("w"));
        Assert.Equal([0, 6, 12, 1.5f, 7.5f, 13.5f, 3, 9, 15, 4.5f, 10.5f, 16.5f], c.ReadFloat32("w_t"));
        Assert.Equal(data[4..8], c.ReadFloat32("row"));
        Assert.Equal([3f, 9f, 15f], c.ReadFloat32("col"));
        Assert.Equal([7.5f, 9f, 10.5f, 7.5f, 9f, 10.5f], c.ReadFloat32("bcast"));
        Assert.Equal([4L, 3L], c.Shape("w_t"));
        Assert.Equal("I64", c.DTypeOf("ids"));
        Assert.Equal([7f, -8f, 1099511627776f], c.ReadFloat32("ids"));
        var e = Assert.Throws<OverflowException>(() => c.ReadInt32("ids"));
        Assert.Contains("element 2 = 1099511627776", e.Message);
    }

    [Fact]
    public void HandBuilt_BigEndianByteorder_IsSwapped()
    {
        using var dir = new TempDir();
        float[] f = [1.5f, -2.25f, 1e-3f, 65504f];
        var half = f.Select(HalfBits.FloatToF16).ToArray();
        var bf = f.Select(HalfBits.FloatToBf16).ToArray();
        var pickle = TorchFiles.StateDictPickle(
        [
            ("f32", new FakeTensor("FloatStorage", "0", 4, 0, [2, 2], [2, 1])),
            ("f32_t", new FakeTensor("FloatStorage", "0", 4, 0, [2, 2], [1, 2])),
            ("f16", new FakeTensor("HalfStorage", "1", 4, 0, [4], [1])),
            ("bf16", new FakeTensor("BFloat16Storage", "2", 4, 1, [3], [1])),
            ("i64", new FakeTensor("LongStorage", "3", 2, 0, [2], [1])),
        ], ordered: false);
        var path = Zip(dir, pickle, new()
        {
            ["0"] = TorchFiles.BigEndian(Bytes.Of(f), 4), ["1"] = TorchFiles.BigEndian(Bytes.Of(half), 2),
            ["2"] = TorchFiles.BigEndian(Bytes.Of(bf), 2), ["3"] = TorchFiles.BigEndian(Bytes.Of(-3L, 1L << 33), 8),
        }, byteorder: "big");
        using var c = TorchCheckpoint.Open(path);
        Assert.Equal(f, c.ReadFloat32("f32"));
        Assert.Equal([f[0], f[2], f[1], f[3]], c.ReadFloat32("f32_t"));
        Assert.Equal(half.Select(HalfBits.F16ToFloat), c.ReadFloat32("f16"));
        Assert.Equal(bf[1..].Select(HalfBits.Bf16ToFloat), c.ReadFloat32("bf16"));
        Assert.Equal([-3f, 8589934592f], c.ReadFloat32("i64"));
    }

    [Fact]
    public void HandBuilt_LegacyFormat_WithViewsOfARootStorage()
    {
        var data = Enumerable.Range(0, 10).Select(i => (float)i).ToArray();
        var main = TorchFiles.StateDictPickle(
        [
            ("all", new FakeTensor("FloatStorage", "140234", 10, 0, [10], [1])),
            ("view", new FakeTensor("FloatStorage", "140234", 10, 1, [2, 2], [2, 1], ("140300", 4, 6))), // elements 4..9, from 1
            ("ints", new FakeTensor("IntStorage", "99", 3, 0, [3], [1])),
        ], legacy: true);
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("legacy.bin"),
            TorchFiles.Legacy(main, new Dictionary<string, (long, byte[])> { ["140234"] = (10, Bytes.Of(data)), ["99"] = (3, Bytes.Of(5, -6, 7)) }));
        using var c = TorchCheckpoint.Open(dir.File("legacy.bin"));
        Assert.Equal(data, c.ReadFloat32("all"));
        Assert.Equal([5f, 6f, 7f, 8f], c.ReadFloat32("view"));
        Assert.Equal([5, -6, 7], c.ReadInt32("ints"));
    }

    // Any permutation of a contiguous tensor's dimensions, at any storage offset, reads as the element-wise gather.
    [Property(MaxTest = 60)]
    public void Gather_FollowsStrides(PositiveInt a, PositiveInt b, PositiveInt c, NonNegativeInt offset, NonNegativeInt permutation)
    {
        long[] dims = [a.Get % 4 + 1, b.Get % 3 + 1, c.Get % 5 + 1];
        long off = offset.Get % 7;
        long[] baseStride = [dims[1] * dims[2], dims[2], 1];
        int[][] perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        var perm = perms[permutation.Get % 6];
        long[] size = perm.Select(p => dims[p]).ToArray(), stride = perm.Select(p => baseStride[p]).ToArray();
        long numel = off + dims[0] * dims[1] * dims[2];
        var data = Enumerable.Range(0, (int)numel).Select(i => (float)i).ToArray();
        using var dir = new TempDir();
        var path = Zip(dir, TorchFiles.StateDictPickle([("t", new FakeTensor("FloatStorage", "0", numel, off, size, stride))]),
            new() { ["0"] = Bytes.Of(data) });
        using var ckpt = TorchCheckpoint.Open(path);
        var expected = new List<float>();
        for (long i = 0; i < size[0]; i++)
            for (long j = 0; j < size[1]; j++)
                for (long k = 0; k < size[2]; k++)
                    expected.Add(data[off + i * stride[0] + j * stride[1] + k * stride[2]]);
        Assert.Equal(expected, ckpt.ReadFloat32("t"));
    }

    // ---- hostile pickles ----

    private static InvalidDataException Refused(byte[] pickle, Dictionary<string, byte[]>? records = null)
    {
        using var dir = new TempDir();
        var path = Zip(dir, pickle, records ?? new() { ["0"] = new byte[16] });
        var e = Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Open(path));
        Assert.True(e.Message.Contains(Path.GetFileName(path)), e.Message);
        return e;
    }

    [Fact]
    public void Hostile_OsSystemGlobal_IsRefusedAtTheGlobal()
    {
        var p = new Pickler().Proto().Global("os", "system").Str("touch /tmp/ilgpu-tune-pwned").Raw(0x85).Reduce().Stop();
        var e = Refused(p.ToArray());
        Assert.Contains("at offset 2: GLOBAL 'os.system' is not allowed", e.Message);
    }

    [Fact]
    public void Hostile_StackGlobalOfBuiltinsExec_IsRefused()
    {
        var p = new Pickler().Proto(4).Raw(0x8C, 8).Raw("builtins"u8.ToArray()).Raw(0x8C, 4).Raw("exec"u8.ToArray()).Raw(0x93).Stop();
        Assert.Contains("at offset 18: GLOBAL 'builtins.exec' is not allowed", Refused(p.ToArray()).Message);
    }

    [Theory]
    [InlineData((byte)'i', "0x69 ('i')")] // INST: instantiates an arbitrary class
    [InlineData((byte)'o', "0x6F ('o')")] // OBJ
    [InlineData((byte)'P', "0x50 ('P')")] // PERSID (text form)
    [InlineData((byte)0x96, "0x96")]      // BYTEARRAY8 (protocol 5)
    public void Hostile_UnknownOpcode_IsRefusedNamingItAndItsOffset(byte op, string named)
    {
        var e = Refused(new Pickler().Proto().EmptyDict().Raw(op).Stop().ToArray());
        Assert.Contains($"(archive/data.pkl): unsafe or unsupported pickle at offset 5: opcode {named} is not allowed", e.Message);
    }

    [Fact]
    public void Hostile_ReduceOfANonCallableAllowListedGlobal_IsRefused()
    {
        // torch.FloatStorage is allowed only as a dtype marker inside a storage id, never called.
        var p = new Pickler().Proto().Global("torch", "FloatStorage").EmptyTuple().Reduce().Stop();
        Assert.Contains("REDUCE of torch.FloatStorage is not allowed", Refused(p.ToArray()).Message);
    }

    [Fact]
    public void Hostile_ReduceOfAStringOrTuple_IsRefused()
    {
        var p = new Pickler().Proto().Str("os.system").EmptyTuple().Reduce().Stop();
        Assert.Contains("REDUCE of str 'os.system' is not allowed", Refused(p.ToArray()).Message);
    }

    [Fact]
    public void Hostile_QuantizedRebuild_IsRefusedAsUnsupported()
    {
        var p = new Pickler().Proto().Global("torch._utils", "_rebuild_qtensor").Stop();
        Assert.Contains("GLOBAL 'torch._utils._rebuild_qtensor' is not supported", Refused(p.ToArray()).Message);
    }

    [Fact]
    public void Hostile_TruncatedStream_IsRefused()
    {
        var full = TorchFiles.StateDictPickle([("w", new FakeTensor("FloatStorage", "0", 4, 0, [4], [1]))]);
        foreach (int cut in new[] { 1, 7, full.Length / 2, full.Length - 1 })
        {
            var e = Refused(full[..cut]);
            Assert.True(e.Message.Contains("truncated") || e.Message.Contains("no terminating newline"), e.Message);
        }
    }

    [Fact]
    public void Hostile_TensorReachingPastItsStorage_IsRefused()
    {
        var p = TorchFiles.StateDictPickle([("w", new FakeTensor("FloatStorage", "0", 4, 1, [2, 2], [2, 1]))]);
        Assert.Contains("reaches element 4, past the storage's 4 elements", Refused(p, new() { ["0"] = new byte[16] }).Message);
    }

    [Fact]
    public void Hostile_StorageLargerThanItsRecord_IsRefused()
    {
        var p = TorchFiles.StateDictPickle([("w", new FakeTensor("FloatStorage", "0", 4, 0, [4], [1]))]);
        Assert.Contains("needs 16 bytes; its record holds 12", Refused(p, new() { ["0"] = new byte[12] }).Message);
    }

    [Fact]
    public void Hostile_BuildOnAPlainDictAndNewObjOfAnOrderedDict_AreRefused()
    {
        var build = new Pickler().Proto().EmptyDict().EmptyDict().Build().Stop();
        Assert.Contains("BUILD on a dict is not allowed", Refused(build.ToArray()).Message);
        var newObj = new Pickler().Proto().Global("collections", "OrderedDict").EmptyTuple().Raw(0x81).Stop();
        Assert.Contains("NEWOBJ of 'collections.OrderedDict' is not allowed", Refused(newObj.ToArray()).Message);
    }

    [Fact]
    public void NotACheckpoint_OrNotADictOfTensors_IsRefused()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("x.bin"), "hello world, not a checkpoint");
        Assert.Contains("not a PyTorch checkpoint", Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Open(dir.File("x.bin"))).Message);
        var list = new Pickler().Proto().EmptyList().Stop();
        Assert.Contains("not a state dict", Refused(list.ToArray()).Message);
        var nonTensor = new Pickler().Proto().EmptyDict().Str("epoch").Int(3).Raw((byte)'s').Stop();
        Assert.Contains("entry 'epoch' is not a tensor", Refused(nonTensor.ToArray()).Message);
    }
}
