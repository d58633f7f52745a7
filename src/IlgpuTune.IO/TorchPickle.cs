// A safe unpickler for torch.save checkpoints: it interprets only the opcode subset that torch's
// _weights_only_unpickler accepts and only the allow-listed GLOBALs, and never calls anything: a REDUCE of an allow-listed
// rebuild function produces a TorchTensor description (storage, offset, shape, strides); tensor bytes are read later.
// Everything else is refused with InvalidDataException naming the source, the opcode or global, and its byte offset:
// "unsafe or unsupported" for what a weights-only load refuses, "malformed" for a truncated or inconsistent stream.
using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO;

/// <summary>A storage referenced by a tensor: <paramref name="Numel"/> elements of <paramref name="DType"/> starting
/// <paramref name="ElementOffset"/> elements into the record <paramref name="Key"/> (non-zero only for legacy views).</summary>
internal sealed record TorchStorage(string Key, string DType, int ElementSize, long Numel, long ElementOffset);

/// <summary>A dense tensor: element (i0, i1, ...) lives at Offset + Σ ik·Stride[k] in its storage (element units).</summary>
internal sealed record TorchTensor(TorchStorage Storage, long Offset, long[] Shape, long[] Stride)
{
    public long ElementCount => Shape.Aggregate(1L, (n, d) => checked(n * d));

    /// <summary>Row-major with no gaps (dimensions of size 1 may carry any stride).</summary>
    public bool IsContiguous
    {
        get
        {
            long expected = 1;
            for (int k = Shape.Length - 1; k >= 0; k--)
            {
                if (Shape[k] == 0) return true;
                if (Shape[k] != 1 && Stride[k] != expected) return false;
                expected *= Shape[k];
            }
            return true;
        }
    }
}

/// <summary>A pickled dict; <see cref="Ordered"/> for collections.OrderedDict. Later SETITEMs of a key replace its value.</summary>
internal sealed class PickleDict(bool ordered)
{
    private readonly Dictionary<object, int> _index = [];
    public bool Ordered { get; } = ordered;
    public List<KeyValuePair<object, object?>> Items { get; } = [];

    public void Set(object key, object? value)
    {
        if (_index.TryGetValue(key, out int i)) Items[i] = new(key, value);
        else
        {
            _index.Add(key, Items.Count);
            Items.Add(new(key, value));
        }
    }
}

internal enum GlobalKind
{
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    RebuildParameterWithState,
    RebuildFromTypeV2,
    ParameterType,
    TensorType,
    Storage,
}

/// <summary>An allow-listed GLOBAL; <see cref="DType"/>/<see cref="ElementSize"/> are set for storage classes.</summary>
internal sealed record PickleGlobal(string Module, string Name, GlobalKind Kind, string? DType = null, int ElementSize = 0)
{
    public override string ToString() => $"{Module}.{Name}";
}

internal ref struct TorchPickle
{
    // Storage class -> (safetensors-style dtype, element bytes); formats.md §2.3.
    private static readonly Dictionary<string, (string DType, int Size)> StorageTypes = new(StringComparer.Ordinal)
    {
        ["DoubleStorage"] = ("F64", 8), ["FloatStorage"] = ("F32", 4), ["HalfStorage"] = ("F16", 2),
        ["BFloat16Storage"] = ("BF16", 2), ["LongStorage"] = ("I64", 8), ["IntStorage"] = ("I32", 4),
        ["ShortStorage"] = ("I16", 2), ["CharStorage"] = ("I8", 1), ["ByteStorage"] = ("U8", 1), ["BoolStorage"] = ("BOOL", 1),
        ["ComplexFloatStorage"] = ("C64", 8), ["ComplexDoubleStorage"] = ("C128", 16), ["UntypedStorage"] = ("U8", 1),
    };

    private readonly ReadOnlySpan<byte> _data;
    private readonly string _source;
    private readonly Func<object?[], TorchStorage> _persistentLoad;
    private readonly List<object?> _stack = [];
    private readonly List<int> _marks = [];
    private readonly Dictionary<long, object?> _memo = [];
    private int _pos;
    private int _op; // offset of the opcode being executed, for messages

    private TorchPickle(ReadOnlySpan<byte> data, string source, Func<object?[], TorchStorage> persistentLoad)
    {
        _data = data;
        _source = source;
        _persistentLoad = persistentLoad;
    }

    /// <summary>
    /// Unpickles one object from the start of <paramref name="data"/>; <paramref name="consumed"/> = bytes up to and including
    /// STOP. <paramref name="persistentLoad"/> receives each BINPERSID tuple (first element "storage").
    /// </summary>
    /// <param name="source">Names the stream in messages, e.g. "model.bin (archive/data.pkl)".</param>
    public static object? Load(ReadOnlySpan<byte> data, string source, Func<object?[], TorchStorage> persistentLoad,
        out int consumed)
    {
        var p = new TorchPickle(data, source, persistentLoad);
        object? result = p.Run();
        consumed = p._pos;
        return result;
    }

    private object? Run()
    {
        while (true)
        {
            _op = _pos;
            byte op = U8();
            switch (op)
            {
                case 0x80: // PROTO
                    int proto = U8();
                    if (proto is < 2 or > 5) throw Unsafe($"pickle protocol {proto} is not supported (expected 2..5)");
                    break;
                case 0x95: // FRAME (protocol 4): only a length hint
                    Take(8);
                    break;
                case (byte)'.': // STOP
                    var top = Pop();
                    if (_stack.Count != 0 || _marks.Count != 0) throw Bad("STOP with values left on the stack");
                    return top;
                case (byte)'c': // GLOBAL
                {
                    string module = Line(), name = Line();
                    Push(Resolve(module, name));
                    break;
                }
                case 0x93: // STACK_GLOBAL
                {
                    string name = Pop() as string ?? throw Bad("STACK_GLOBAL name is not a string");
                    string module = Pop() as string ?? throw Bad("STACK_GLOBAL module is not a string");
                    Push(Resolve(module, name));
                    break;
                }
                case (byte)'(': _marks.Add(_stack.Count); break;
                case (byte)')': Push(Array.Empty<object?>()); break;
                case (byte)'t': Push(PopMark()); break;
                case 0x85: Push(new[] { Pop() }); break;
                case 0x86:
                {
                    var b = Pop();
                    Push(new[] { Pop(), b });
                    break;
                }
                case 0x87:
                {
                    var c = Pop();
                    var b = Pop();
                    Push(new[] { Pop(), b, c });
                    break;
                }
                case (byte)']': Push(new List<object?>()); break;
                case (byte)'a': // APPEND
                {
                    var v = Pop();
                    Target<List<object?>>("APPEND").Add(v);
                    break;
                }
                case (byte)'e': // APPENDS
                {
                    var items = PopMark();
                    Target<List<object?>>("APPENDS").AddRange(items);
                    break;
                }
                case (byte)'}': Push(new PickleDict(ordered: false)); break;
                case (byte)'s': // SETITEM
                {
                    var v = Pop();
                    var k = Pop();
                    Target<PickleDict>("SETITEM").Set(Key(k), v);
                    break;
                }
                case (byte)'u': // SETITEMS
                {
                    var items = PopMark();
                    if (items.Length % 2 != 0) throw Bad("SETITEMS with an odd number of items");
                    var d = Target<PickleDict>("SETITEMS");
                    for (int i = 0; i < items.Length; i += 2) d.Set(Key(items[i]), items[i + 1]);
                    break;
                }
                case (byte)'N': Push(null); break;
                case 0x88: Push(true); break;
                case 0x89: Push(false); break;
                case (byte)'K': Push((long)U8()); break;
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break;
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break;
                case 0x8A: // LONG1: little-endian two's complement
                {
                    var bytes = Take(U8());
                    var v = new BigInteger(bytes, isUnsigned: false, isBigEndian: false);
                    Push(v >= long.MinValue && v <= long.MaxValue ? (object)(long)v : v);   // torch writes ints >= 2^31 this way
                    break;
                }
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8))); break;
                case (byte)'X': Push(Utf8(Take(Length(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))))); break;
                case 0x8C: Push(Utf8(Take(U8()))); break; // SHORT_BINUNICODE
                case 0x8D: Push(Utf8(Take(Length(BinaryPrimitives.ReadUInt64LittleEndian(Take(8)))))); break; // BINUNICODE8
                case (byte)'U': Push(Utf8(Take(U8()))); break; // SHORT_BINSTRING (Python 2 str, read as UTF-8)
                case (byte)'C': Push(Take(U8()).ToArray()); break; // SHORT_BINBYTES
                case (byte)'B': Push(Take(Length(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))).ToArray()); break;
                case (byte)'q': _memo[U8()] = Peek("BINPUT"); break;
                case (byte)'r': _memo[BinaryPrimitives.ReadUInt32LittleEndian(Take(4))] = Peek("LONG_BINPUT"); break;
                case 0x94: _memo[_memo.Count] = Peek("MEMOIZE"); break;
                case (byte)'h': Push(MemoGet(U8())); break;
                case (byte)'j': Push(MemoGet(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))); break;
                case (byte)'R': // REDUCE
                {
                    var args = Pop() as object?[] ?? throw Bad("REDUCE arguments are not a tuple");
                    var func = Pop();
                    Push(Call(func, args));
                    break;
                }
                case (byte)'b': // BUILD: the state of an OrderedDict (state_dict()._metadata) or tensor is not needed
                {
                    Pop();
                    var target = Peek("BUILD");
                    if (target is not (TorchTensor or PickleDict { Ordered: true }))
                        throw Unsafe($"BUILD on {Describe(target)} is not allowed (only on an OrderedDict or a tensor)");
                    break;
                }
                case 0x81: // NEWOBJ: only torch.nn.Parameter(data[, requires_grad])
                {
                    var args = Pop() as object?[] ?? throw Bad("NEWOBJ arguments are not a tuple");
                    var cls = Pop();
                    if (cls is not PickleGlobal { Kind: GlobalKind.ParameterType })
                        throw Unsafe($"NEWOBJ of {Describe(cls)} is not allowed (only torch.nn.Parameter)");
                    if (args.Length is < 1 or > 2 || args[0] is not TorchTensor)
                        throw Bad("NEWOBJ torch.nn.Parameter expects (tensor[, requires_grad])");
                    Push(args[0]);
                    break;
                }
                case (byte)'Q': // BINPERSID
                {
                    var pid = Pop() as object?[];
                    if (pid is null || pid.Length == 0 || pid[0] as string != "storage")
                        throw Bad("BINPERSID id is not a ('storage', ...) tuple");
                    try
                    {
                        Push(_persistentLoad(pid));
                    }
                    catch (InvalidDataException e)
                    {
                        throw new InvalidDataException($"{_source}: at pickle offset {_op}: {e.Message}", e);
                    }
                    break;
                }
                default:
                    throw Unsafe($"opcode 0x{op:X2}{(op is >= 0x20 and < 0x7F ? $" ('{(char)op}')" : "")} is not allowed "
                        + "(a weights file may only use the opcodes torch.save emits for tensors)");
            }
        }
    }

    // ---- the allow-list (torch's weights_only unpickler) ----

    private PickleGlobal Resolve(string module, string name)
    {
        var kind = (module, name) switch
        {
            ("collections", "OrderedDict") => GlobalKind.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => GlobalKind.RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => GlobalKind.RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => GlobalKind.RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => GlobalKind.RebuildParameterWithState,
            ("torch._tensor", "_rebuild_from_type_v2") => GlobalKind.RebuildFromTypeV2,
            ("torch.nn.parameter", "Parameter") => GlobalKind.ParameterType,
            ("torch", "Tensor") => GlobalKind.TensorType,
            ("torch", _) when StorageTypes.ContainsKey(name) => GlobalKind.Storage,
            _ => (GlobalKind?)null,
        };
        if (kind is null)
            throw Unsafe(module == "torch._utils" && name.StartsWith("_rebuild_", StringComparison.Ordinal)
                ? $"GLOBAL '{module}.{name}' is not supported: only dense CPU-loadable tensors can be read (no quantized, "
                  + "sparse, meta or subclass tensors)"
                : $"GLOBAL '{module}.{name}' is not allowed: a weights file may only reference collections.OrderedDict, "
                  + "torch._utils rebuild functions, torch.nn.Parameter, torch.Tensor and torch storage classes");
        if (kind == GlobalKind.Storage)
        {
            var (dtype, size) = StorageTypes[name];
            return new PickleGlobal(module, name, GlobalKind.Storage, dtype, size);
        }
        return new PickleGlobal(module, name, kind.Value);
    }

    private object Call(object? func, object?[] args)
    {
        if (func is not PickleGlobal g)
            throw Unsafe($"REDUCE of {Describe(func)} is not allowed (only allow-listed torch rebuild functions)");
        switch (g.Kind)
        {
            case GlobalKind.OrderedDict:
                if (args.Length != 0) throw Bad("collections.OrderedDict may only be called with no arguments");
                return new PickleDict(ordered: true);
            case GlobalKind.RebuildTensorV2:
                // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                if (args.Length is not (6 or 7)) throw Bad($"{g} expects 6 or 7 arguments, got {args.Length}");
                if (args[4] is not bool) throw Bad($"{g}: requires_grad is {Describe(args[4])}, expected a bool");
                if (args[5] is not PickleDict)
                    throw Bad($"{g}: backward_hooks is {Describe(args[5])}, expected an OrderedDict");
                return Tensor(g, args);
            case GlobalKind.RebuildTensor:
                if (args.Length != 4) throw Bad($"{g} expects 4 arguments, got {args.Length}");
                return Tensor(g, args);
            case GlobalKind.RebuildParameter or GlobalKind.RebuildParameterWithState:
                // (data, requires_grad, backward_hooks[, state]): the parameter is its data
                if (args.Length != (g.Kind == GlobalKind.RebuildParameter ? 3 : 4) || args[0] is not TorchTensor t)
                    throw Bad($"{g} expects (tensor, requires_grad, backward_hooks{(g.Kind == GlobalKind.RebuildParameter ? "" : ", state")})");
                return t;
            case GlobalKind.RebuildFromTypeV2:
                // (func, type, args, state) -> func(*args) for a plain Tensor or Parameter type
                if (args.Length != 4) throw Bad($"{g} expects 4 arguments, got {args.Length}");
                if (args[1] is not PickleGlobal { Kind: GlobalKind.TensorType or GlobalKind.ParameterType })
                    throw Unsafe($"{g}: type {Describe(args[1])} is not allowed (only torch.Tensor or torch.nn.Parameter)");
                if (args[2] is not object?[] inner) throw Bad($"{g}: args is {Describe(args[2])}, expected a tuple");
                if (args[0] is PickleGlobal { Kind: GlobalKind.RebuildFromTypeV2 })
                    throw Unsafe($"{g} may not rebuild through itself");
                return Call(args[0], inner);
            default:
                throw Unsafe($"REDUCE of {g} is not allowed ({g} is only accepted as a value)");
        }
    }

    private TorchTensor Tensor(PickleGlobal g, object?[] args)
    {
        if (args[0] is not TorchStorage storage) throw Bad($"{g}: storage is {Describe(args[0])}, expected a persistent storage");
        if (args[1] is not long offset || offset < 0) throw Bad($"{g}: storage_offset {Describe(args[1])} is not a non-negative int");
        var shape = Longs(g, "size", args[2]);
        var stride = Longs(g, "stride", args[3]);
        if (shape.Length != stride.Length) throw Bad($"{g}: size has {shape.Length} dimensions but stride has {stride.Length}");
        try
        {
            long count = 1, last = offset;
            for (int k = 0; k < shape.Length; k++)
            {
                count = checked(count * shape[k]);
                if (shape[k] > 0) last = checked(last + (shape[k] - 1) * stride[k]);
            }
            if (count > 0 && last >= storage.Numel)
                throw Bad($"{g}: size [{string.Join(", ", shape)}] stride [{string.Join(", ", stride)}] at offset {offset} "
                    + $"reaches element {last}, past the storage's {storage.Numel} elements");
        }
        catch (OverflowException)
        {
            throw Bad($"{g}: size [{string.Join(", ", shape)}] stride [{string.Join(", ", stride)}] overflows");
        }
        return new TorchTensor(storage, offset, shape, stride);
    }

    private long[] Longs(PickleGlobal g, string what, object? value)
    {
        if (value is not object?[] items) throw Bad($"{g}: {what} is {Describe(value)}, expected a tuple of ints");
        var result = new long[items.Length];
        for (int i = 0; i < items.Length; i++)
            result[i] = items[i] is long v && v >= 0 ? v : throw Bad($"{g}: {what}[{i}] is {Describe(items[i])}, expected an int >= 0");
        return result;
    }

    // ---- stack, memo and stream primitives ----

    private void Push(object? v) => _stack.Add(v);

    private object? Pop()
    {
        int floor = _marks.Count > 0 ? _marks[^1] : 0;
        if (_stack.Count <= floor) throw Bad("stack underflow");
        var v = _stack[^1];
        _stack.RemoveAt(_stack.Count - 1);
        return v;
    }

    private object? Peek(string opName)
    {
        int floor = _marks.Count > 0 ? _marks[^1] : 0;
        if (_stack.Count <= floor) throw Bad($"{opName} on an empty stack");
        return _stack[^1];
    }

    private object?[] PopMark()
    {
        if (_marks.Count == 0) throw Bad("no MARK to pop to");
        int m = _marks[^1];
        _marks.RemoveAt(_marks.Count - 1);
        var items = _stack.GetRange(m, _stack.Count - m).ToArray();
        _stack.RemoveRange(m, _stack.Count - m);
        return items;
    }

    private T Target<T>(string opName) where T : class =>
        Peek(opName) as T ?? throw Bad($"{opName} target is {Describe(_stack[^1])}, expected a {(typeof(T) == typeof(PickleDict) ? "dict" : "list")}");

    private object Key(object? k) => k is string or long or bool or double or BigInteger
        ? k
        : throw Bad($"dict key {Describe(k)} is not supported (expected a str or int)");

    private object? MemoGet(long i) => _memo.TryGetValue(i, out var v) ? v : throw Bad($"memo entry {i} was never stored");

    private byte U8() => Take(1)[0];

    private ReadOnlySpan<byte> Take(int n)
    {
        if (n > _data.Length - _pos)
            throw Bad($"truncated: needs {n} more bytes at offset {_pos}, the stream ends at {_data.Length}");
        var s = _data.Slice(_pos, n);
        _pos += n;
        return s;
    }

    private int Length(ulong n) => n <= (ulong)(_data.Length - _pos)
        ? (int)n
        : throw Bad($"truncated: a {n}-byte string at offset {_pos} runs past the end ({_data.Length})");

    private string Line()
    {
        int nl = _data[_pos..].IndexOf((byte)'\n');
        if (nl < 0) throw Bad("truncated: GLOBAL name has no terminating newline");
        return Utf8(Take(nl + 1)[..nl]);
    }

    private string Utf8(ReadOnlySpan<byte> bytes)
    {
        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw Bad("string is not valid UTF-8");
        }
    }

    private static readonly UTF8Encoding StrictUtf8 = new(false, throwOnInvalidBytes: true);

    private static string Describe(object? v) => v switch
    {
        null => "None",
        PickleGlobal g => $"'{g}'",
        string s => $"str '{(s.Length > 40 ? s[..40] + "…" : s)}'",
        long or BigInteger => $"int {v}",
        bool b => b ? "True" : "False",
        double d => $"float {d}",
        object?[] t => $"a {t.Length}-tuple",
        List<object?> => "a list",
        PickleDict d => d.Ordered ? "an OrderedDict" : "a dict",
        TorchTensor => "a tensor",
        TorchStorage => "a storage",
        byte[] => "bytes",
        _ => v.GetType().Name,
    };

    private InvalidDataException Unsafe(string message) =>
        new($"{_source}: unsafe or unsupported pickle at offset {_op}: {message}");

    private InvalidDataException Bad(string message) =>
        new($"{_source}: malformed pickle at offset {_op}: {message}");
}
