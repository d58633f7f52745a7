using System.Buffers.Binary;
using System.IO.Compression;
using System.Numerics;
using System.Text;

namespace IlgpuTune.IO.Tests;

/// <summary>
/// Emits pickle opcodes as CPython's protocol-2 pickler does for torch.save (formats.md §2.3): every str, tuple and global
/// is memoized with BINPUT, and a str or global seen before is fetched with BINGET.
/// </summary>
internal sealed class Pickler
{
    private readonly MemoryStream _s = new();
    private readonly Dictionary<string, int> _memo = new(StringComparer.Ordinal);
    private int _next;

    public Pickler Raw(params byte[] bytes)
    {
        _s.Write(bytes);
        return this;
    }

    public Pickler Proto(int p = 2) => Raw(0x80, (byte)p);
    public Pickler Stop() => Raw((byte)'.');
    public Pickler Mark() => Raw((byte)'(');
    public Pickler Tuple() => Raw((byte)'t').Put();
    public Pickler Tuple2() => Raw(0x86).Put();
    public Pickler EmptyTuple() => Raw((byte)')');
    public Pickler EmptyDict() => Raw((byte)'}').Put();
    public Pickler EmptyList() => Raw((byte)']').Put();
    public Pickler SetItems() => Raw((byte)'u');
    public Pickler Appends() => Raw((byte)'e');
    public Pickler Reduce() => Raw((byte)'R').Put();
    public Pickler Build() => Raw((byte)'b');
    public Pickler PersId() => Raw((byte)'Q');
    public Pickler Bool(bool b) => Raw(b ? (byte)0x88 : (byte)0x89);
    public Pickler None() => Raw((byte)'N');

    public Pickler Put()
    {
        int i = _next++;
        return i < 256 ? Raw((byte)'q', (byte)i) : Raw((byte)'r').U32((uint)i);
    }

    public Pickler Get(int i) => i < 256 ? Raw((byte)'h', (byte)i) : Raw((byte)'j').U32((uint)i);

    public Pickler Global(string module, string name) => Memo("global:" + module + "." + name,
        () => Raw((byte)'c').Raw(Encoding.UTF8.GetBytes(module + "\n" + name + "\n")));

    public Pickler Str(string s) => Memo("str:" + s, () =>
    {
        var b = Encoding.UTF8.GetBytes(s);
        Raw((byte)'X').U32((uint)b.Length).Raw(b);
    });

    public Pickler Int(long v)
    {
        if (v is >= 0 and < 256) return Raw((byte)'K', (byte)v);
        if (v is >= 0 and < 65536) return Raw((byte)'M').Raw(BitConverter.GetBytes((ushort)v));
        if (v is >= int.MinValue and <= int.MaxValue) return Raw((byte)'J').Raw(BitConverter.GetBytes((int)v));
        var b = new BigInteger(v).ToByteArray(); // little-endian two's complement, as LONG1
        return Raw(0x8A, (byte)b.Length).Raw(b);
    }

    public Pickler Ints(long[] values)
    {
        if (values.Length == 0) return EmptyTuple();
        if (values.Length == 1) { Int(values[0]); return Raw(0x85).Put(); }
        if (values.Length == 2) { Int(values[0]); Int(values[1]); return Tuple2(); }
        if (values.Length == 3) { foreach (var v in values) Int(v); return Raw(0x87).Put(); }
        Mark();
        foreach (var v in values) Int(v);
        return Tuple();
    }

    private Pickler U32(uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        _s.Write(b);
        return this;
    }

    private Pickler Memo(string key, Action emit)
    {
        if (_memo.TryGetValue(key, out int i)) return Get(i);
        emit();
        _memo[key] = _next;
        return Put();
    }

    public byte[] ToArray() => _s.ToArray();
}

/// <summary>A tensor as torch pickles it: storage class and key, the storage's numel, then the view on it.</summary>
internal sealed record FakeTensor(string StorageClass, string Key, long StorageNumel, long Offset, long[] Size, long[] Stride,
    (string Key, long Offset, long Size)? LegacyView = null);

internal static class TorchFiles
{
    /// <summary>The state-dict pickle torch.save writes: {name: _rebuild_tensor_v2(storage, offset, size, stride, False,
    /// OrderedDict())}, as an OrderedDict with a _metadata BUILD (model.state_dict()) or a plain dict (transformers shards).
    /// For the zip format this is byte-identical to torch.save's data.pkl of the same dict (compared against torch 1.13).</summary>
    public static byte[] StateDictPickle(IEnumerable<(string Name, FakeTensor T)> items, bool ordered = true, bool legacy = false)
    {
        var p = new Pickler().Proto();
        if (ordered) p.Global("collections", "OrderedDict").EmptyTuple().Reduce();
        else p.EmptyDict();
        var list = items.ToList();
        if (list.Count > 1) p.Mark(); // CPython batches >1 items as MARK ... SETITEMS, a single one as SETITEM
        foreach (var (name, t) in list)
        {
            p.Str(name).Global("torch._utils", "_rebuild_tensor_v2").Mark();
            p.Mark().Str("storage").Global("torch", t.StorageClass).Str(t.Key).Str("cpu").Int(t.StorageNumel);
            if (legacy)
            {
                if (t.LegacyView is { } v) p.Str(v.Key).Int(v.Offset).Int(v.Size).Raw(0x87).Put();
                else p.None();
            }
            p.Tuple().PersId();
            p.Int(t.Offset).Ints(t.Size).Ints(t.Stride).Bool(false).Global("collections", "OrderedDict").EmptyTuple().Reduce();
            p.Tuple().Reduce();
        }
        if (list.Count > 1) p.SetItems();
        else if (list.Count == 1) p.Raw((byte)'s');
        if (ordered)
        {
            // state = {'_metadata': OrderedDict([('', {'version': 1})])}, then BUILD
            p.EmptyDict().Str("_metadata").Global("collections", "OrderedDict").EmptyTuple().Reduce()
                .Str("").EmptyDict().Str("version").Int(1).Raw((byte)'s') // {'version': 1}
                .Raw((byte)'s')                                            // od[''] = ...
                .Raw((byte)'s')                                            // state['_metadata'] = od
                .Build();
        }
        return p.Stop().ToArray();
    }

    /// <summary>A zip-format checkpoint: &lt;prefix&gt;/data.pkl, byteorder, data/&lt;key&gt;, version; stored entries.</summary>
    public static void WriteZip(string path, byte[] pickle, IReadOnlyDictionary<string, byte[]> records, string prefix = "archive",
        string? byteorder = "little")
    {
        using var fs = File.Create(path);
        using var zip = new ZipArchive(fs, ZipArchiveMode.Create);
        void Add(string name, byte[] data)
        {
            using var s = zip.CreateEntry(prefix + "/" + name, CompressionLevel.NoCompression).Open();
            s.Write(data);
        }
        Add("data.pkl", pickle);
        if (byteorder is not null) Add("byteorder", Encoding.ASCII.GetBytes(byteorder));
        foreach (var (key, data) in records) Add("data/" + key, data);
        Add("version", "3\n"u8.ToArray());
    }

    /// <summary>A legacy-format checkpoint (formats.md §2.5): magic, protocol, sys_info, main pickle, sorted keys, storages.</summary>
    public static byte[] Legacy(byte[] mainPickle, IReadOnlyDictionary<string, (long Numel, byte[] Data)> storages)
    {
        var s = new MemoryStream();
        s.Write(new Pickler().Proto().Raw(0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19).Stop().ToArray());
        s.Write(new Pickler().Proto().Int(1001).Stop().ToArray());
        s.Write(new Pickler().Proto().EmptyDict().Mark().Str("protocol_version").Int(1001).Str("little_endian").Bool(true)
            .Str("type_sizes").EmptyDict().Mark().Str("short").Int(2).Str("int").Int(4).Str("long").Int(4).SetItems()
            .SetItems().Stop().ToArray());
        s.Write(mainPickle);
        var keys = storages.Keys.Order(StringComparer.Ordinal).ToList();
        var kp = new Pickler().Proto().EmptyList().Mark();
        foreach (var k in keys) kp.Str(k);
        s.Write(kp.Appends().Stop().ToArray());
        foreach (var k in keys)
        {
            s.Write(BitConverter.GetBytes(storages[k].Numel));
            s.Write(storages[k].Data);
        }
        return s.ToArray();
    }

    public static byte[] F32(params float[] v) => Bytes.Of(v);

    public static byte[] BigEndian(byte[] littleEndian, int elementSize)
    {
        var b = (byte[])littleEndian.Clone();
        for (int i = 0; i < b.Length; i += elementSize) Array.Reverse(b, i, elementSize);
        return b;
    }
}
