using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PeftSharp.Kernels;
using PeftSharp.Native;

namespace PeftSharp.Quantization;

/// <summary>
/// One tile of an NF4 weight dequantised straight into MKL's packed layout of a GEMM's B operand, so the tile's GEMM
/// (cblas_sgemm_compute) skips the copy into that layout which an sgemm makes at every call. That copy was the QLoRA
/// step's largest cost beside the LoRA step on packed fp32 weights (bench/qlora-step-perf.sh: MKL packing 45 ms per
/// thread per step against 11, dequantisation 10): the dequantiser already writes every value once, and now writes it
/// where MKL's micro-kernel reads it.
/// <para>
/// MKL does not document the packed layout, so it is read off MKL itself: a tile-shaped matrix holding 1, 2, 3, ... is
/// packed once into this tile's own buffer (the layout's data offset depends on the buffer's address, so the buffer
/// is learnt and then reused), and the position of every value is found in it. Where that layout is what the
/// dequantiser can write (panels of whole runs of its store width, 16 values with AVX-512 and 8 with AVX2: for each
/// inner index k, a run of consecutive columns n), the
/// tile keeps each panel row's position; any other layout (a column count MKL pads, an MKL that packs otherwise)
/// gives no tile and the caller dequantises into a plain buffer as before. The header MKL wrote stays as written.
/// Every later dequantisation overwrites all data positions, so a tile on its own pages stays byte for byte what
/// cblas_sgemm_pack would make of the dense tile (Nf4PanelTileTests compares the two). A team slot's tiles share their
/// data pages (<see cref="SharedPages"/>); a tile taking them over from another also zeroes its padding, which MKL reads.
/// </para>
/// Orientation: <see cref="Forward"/> tiles serve y = x W_tile^T (B = W_tile^T: n = the tile's rows, k = in; a panel
/// row holds one column of W, so the codes of sixteen rows are gathered and transposed in registers); backward tiles serve
/// grad_x += g W_tile (B = W_tile: k = the tile's rows, n = in; a panel row is a run of one row of W).
/// </summary>
internal sealed unsafe class Nf4PanelTile : IDisposable
{
    /// <summary>Whether this process can use panel tiles: MKL's pack API and the AVX-512 or AVX2 kernels; false turns them off (the qlora-step bench's comparison column).</summary>
    internal static bool Enabled { get; set; } = true;

    internal static bool Supported => (Avx512F.IsSupported && Avx512BW.IsSupported || Avx2.IsSupported) && PackedGemm.Available;

    /// <summary>
    /// The dequantiser's kernels: AVX-512 (16 values per store; MKL's AVX-512 kernels pack B in 48- and 16-column panels)
    /// where the CPU has it, else AVX2 (8 per store; MKL's AVX2 kernels pack in 24-, 16- and 8-column panels: a Zen 3
    /// EPYC). Tiles learnt under one setting are written by its kernels; tests set it to false on an AVX-512 CPU to
    /// run the AVX2 kernels there too.
    /// </summary>
    internal static bool Wide { get; set; } = Avx512F.IsSupported && Avx512BW.IsSupported;

    /// <summary>Values per store of the kernels in use: panel runs must be whole multiples of it.</summary>
    static int Lanes => Wide ? 16 : 8;

    /// <summary>The kernels' instruction set, for the benches' output.</summary>
    internal static string Isa => !Supported ? "none" : Wide ? "AVX-512" : "AVX2";

    /// <summary>Panel tiles are on and this process can use them.</summary>
    internal static bool Available => Enabled && Supported;

    /// <summary>Fewest rows of A a tile serves: MKL packs one-row products another way (measured: m = 1 differs, 16-1024 agree).</summary>
    internal const int MinRows = 16;

    /// <summary>Tiles one calling thread keeps per team slot (each maps one tile's bytes; learning one costs a pack and a scan).</summary>
    const int MaxPerSlot = 16;

    public bool Forward { get; }
    /// <summary>B's columns and inner dimension.</summary>
    public int N { get; }
    public int K { get; }
    /// <summary>Bytes of the tile's own data that become resident: 0 on shared pages (the layout's header is a page more).</summary>
    public long DataBytes => Shared ? 0 : (long)N * K * sizeof(float);

    nint _data, _length;
    readonly int[] _panelN0, _panelWidth;
    /// <summary>Float offset of panel p's row k in the buffer: [p * K + k].</summary>
    readonly int[] _rowAt;

    /// <summary>Written by the AVX-512 kernels (else AVX2): the panels' runs are whole multiples of their store width.</summary>
    readonly bool _wide;

    Nf4PanelTile(bool forward, int n, int k, nint data, nint length, int[] panelN0, int[] panelWidth, int[] rowAt, bool wide)
    {
        (Forward, N, K, _data, _length, _panelN0, _panelWidth, _rowAt, _wide) = (forward, n, k, data, length, panelN0, panelWidth, rowAt, wide);
    }

    /// <summary>
    /// Learns MKL's layout for B of <paramref name="n"/> x <paramref name="k"/> packed for <paramref name="m"/>-row products on
    /// this thread (MKL picks a layout by its thread count, so learn where the GEMMs run); null where the dequantiser cannot
    /// write it.
    /// </summary>
    internal static Nf4PanelTile? Learn(bool forward, int m, int n, int k, SharedPages? shared = null)
    {
        long count = (long)n * k;
        // The probe's values must be exact floats (< 2^24) and their positions ints.
        if (!Supported || m < MinRows || n % 16 != 0 || k % 16 != 0 || count >= 1 << 24) return null;
        nint length = PackedGemm.PackedSize(m, n, k);
        if (length / sizeof(float) >= int.MaxValue) return null;
        nint data = Libc.MapAnonymous(length);
        if (data == 0) return null;
        var tile = Read(forward, m, n, k, data, length, shared);
        if (tile is null) Libc.Unmap(data, length);
        return tile;
    }

    static Nf4PanelTile? Read(bool forward, int m, int n, int k, nint data, nint length, SharedPages? shared)
    {
        // The probe and the position table live in native memory freed at once: as managed arrays (~3 MB per tile
        // learnt) they stayed in the GC heap and showed in the run's peak (plan-vs-measured, QLoRA: +29 MB).
        long count = (long)n * k;
        float* probe = (float*)NativeMemory.Alloc((nuint)count, sizeof(float));
        int* at = (int*)NativeMemory.Alloc((nuint)count, sizeof(int));
        try
        {
            for (long i = 0; i < count; i++) probe[i] = i + 1;
            PackedGemm.PackB(forward, m, n, k, probe, forward ? k : n, (float*)data);
            return Read(forward, n, k, data, length, shared, new Span<int>(at, (int)count));
        }
        finally
        {
            NativeMemory.Free(probe);
            NativeMemory.Free(at);
        }
    }

    /// <summary>Reads the layout MKL packed the probe (1, 2, 3, ...) into; <paramref name="at"/>[kk * n + nn] gets where B[kk, nn] went.</summary>
    static Nf4PanelTile? Read(bool forward, int n, int k, nint data, nint length, SharedPages? shared, Span<int> at)
    {
        long count = (long)n * k;
        at.Fill(-1);
        float* d = (float*)data;
        long floats = length / sizeof(float), found = 0, header = -1, first = long.MaxValue, last = -1;
        for (long p = 0; p < floats; p++)
        {
            float v = d[p];
            if (!(v >= 1 && v <= count) || v != MathF.Floor(v))   // header words, padding (0)
            {
                if (v != 0 || BitConverter.SingleToInt32Bits(v) != 0) header = p;
                continue;
            }
            first = Math.Min(first, p);
            last = p;
            // The source held B^T [n, k] (forward) or B [k, n].
            long s = (long)v - 1, logical = forward ? s % k * n + s / k : s;
            if (at[(int)logical] != -1) return null;
            at[(int)logical] = (int)p;
            found++;
        }
        if (found != count) return null;
        // Panels from B's first row: runs of consecutive positions; every other row must repeat them.
        var n0s = new List<int>();
        var widths = new List<int>();
        int lanes = Lanes;
        for (int start = 0; start < n;)
        {
            int end = start + 1;
            while (end < n && at[end] == at[end - 1] + 1) end++;
            if (start % lanes != 0 || (end - start) % lanes != 0) return null;
            n0s.Add(start);
            widths.Add(end - start);
            start = end;
        }
        var rowAt = new int[n0s.Count * k];
        for (int p = 0; p < n0s.Count; p++)
            for (int kk = 0; kk < k; kk++)
            {
                int start = at[kk * n + n0s[p]];
                for (int j = 1; j < widths[p]; j++)
                    if (at[kk * n + n0s[p] + j] != start + j) return null;
                rowAt[p * k + kk] = start;
            }
        var tile = new Nf4PanelTile(forward, n, k, data, length, [.. n0s], [.. widths], rowAt, Wide);
        // The data's pages onto the slot's shared pages, where the header lies on pages before them.
        long from = first * sizeof(float) & ~(PageBytes - 1), to = ((last + 1) * sizeof(float) + PageBytes - 1) & ~(PageBytes - 1);
        if (shared is not null && (header + 1) * sizeof(float) <= from && shared.Fit(to - from) && Libc.MapFileAt(data + (nint)from, (nint)(to - from), shared.File, 0))
        {
            tile._pages = shared;
            tile.SharedBytes = (from, to);
            tile._padding = Padding(at, from / sizeof(float), to / sizeof(float));
        }
        return tile;
    }

    /// <summary>
    /// The float ranges (start, count) of [<paramref name="from"/>, <paramref name="to"/>) that hold no data: MKL's
    /// padding, which its kernels do read as zeros (a tile whose padding held another tile's values gave wrong products).
    /// </summary>
    static (int Start, int Count)[] Padding(ReadOnlySpan<int> at, long from, long to)
    {
        byte* isData = (byte*)NativeMemory.AllocZeroed((nuint)(to - from));
        try
        {
            foreach (int p in at) isData[p - from] = 1;
            var runs = new List<(int, int)>();
            for (long i = 0; i < to - from;)
            {
                if (isData[i] != 0) { i++; continue; }
                long j = i;
                while (j < to - from && isData[j] == 0) j++;
                runs.Add(((int)(from + i), (int)(j - i)));
                i = j;
            }
            return [.. runs];
        }
        finally { NativeMemory.Free(isData); }
    }

    const long PageBytes = 4096;

    /// <summary>Whether the data's pages are the slot's shared pages (<see cref="SharedPages"/>) rather than the tile's own.</summary>
    public bool Shared => _pages is not null;

    /// <summary>The byte range of the buffer that lies on the shared pages (data, padding between panels, page slack).</summary>
    internal (long From, long To) SharedBytes { get; private set; }

    SharedPages? _pages;
    (int Start, int Count)[] _padding = [];

    /// <summary>
    /// Dequantises the weight's rows [<paramref name="firstRow"/>, + tile rows) into the panels. <paramref name="packed"/>,
    /// <paramref name="absmax"/> (decoded) and <paramref name="code"/> (16 values) are the whole weight's; <paramref name="cols"/> its row length.
    /// </summary>
    public void Write(byte* packed, float* absmax, float* code, int blockSize, long cols, long firstRow)
    {
        if (_data == 0) throw new ObjectDisposedException(nameof(Nf4PanelTile));
        float* d = (float*)_data;
        // On shared pages another tile may have written since: its values in this tile's padding go back to zero.
        if (_pages is not null && _pages.Last != this)
        {
            foreach (var (start, count) in _padding) new Span<float>(d + start, count).Clear();
            _pages.Last = this;
        }
        // The tile's codes come from memory (a step walks every weight once per pass): one sequential read brings them in at
        // the memory's streaming rate, where the kernels' strided reads (16 rows at a time forward) would each wait for it.
        long rows = Forward ? N : K;
        Touch(packed + firstRow * cols / 2, rows * cols / 2);
        if (!_wide)
        {
            if (Forward) WriteTransposed8(d, packed, absmax, code, blockSize, cols, firstRow);
            else WriteRows8(d, packed, absmax, code, blockSize, cols, firstRow);
        }
        else if (Forward) WriteTransposed(d, packed, absmax, Vector512.Load(code), blockSize, cols, firstRow);
        else WriteRows(d, packed, absmax, Vector512.Load(code), blockSize, cols, firstRow);
    }

    static long _sink;

    /// <summary>Reads one word per cache line of [<paramref name="p"/>, + <paramref name="bytes"/>), in order.</summary>
    static void Touch(byte* p, long bytes)
    {
        long sum = 0;
        for (long i = 0; i < bytes; i += 64) sum += *(long*)(p + i);
        Volatile.Write(ref _sink, sum);
    }

    /// <summary>Backward: panel row kk is W[firstRow + kk, n0 .. n0 + width), one run of codes.</summary>
    void WriteRows(float* d, byte* packed, float* absmax, Vector512<float> table, int blockSize, long cols, long firstRow)
    {
        // Panel by panel, so the stores walk each panel's rows in order (row by row of W they would land in a different
        // page per panel: a TLB miss per store); the tile's codes are re-read from cache once per panel instead.
        // The table is scaled once per block, as Nf4Kernel does (the same products), and looked up 16 nibbles at a time.
        var mask = Vector128.Create((byte)15);
        // A run's block: a shift for the usual power-of-two block sizes (a 64-bit division per 16 values costs more than their lookups).
        int shift = BitOperations.IsPow2(blockSize) ? BitOperations.Log2((uint)blockSize) : -1;
        long lastBlock = -1;
        var scaled = table;
        fixed (int* rowAt = _rowAt, n0s = _panelN0, widths = _panelWidth)
            for (int p = 0; p < _panelN0.Length; p++)
            {
                int n0 = n0s[p], w = widths[p];
                int* at = rowAt + p * K;
                for (int kk = 0; kk < K; kk++)
                {
                    float* dst = d + at[kk];
                    long e = (firstRow + kk) * cols + n0;
                    byte* src = packed + e / 2;
                    for (int j = 0; j < w; j += 16, e += 16, src += 8)
                    {
                        long block = shift >= 0 ? e >> shift : e / blockSize;
                        if (block != lastBlock) { scaled = Avx512F.Multiply(table, Vector512.Create(absmax[block])); lastBlock = block; }
                        var b = Vector128.CreateScalarUnsafe(*(ulong*)src).AsByte();
                        var hi = Vector128.ShiftRightLogical(b.AsUInt16(), 4).AsByte() & mask;
                        Avx512F.Store(dst + j, Avx512F.PermuteVar16x32(scaled, Avx512F.ConvertToVector512Int32(Sse2.UnpackLow(hi, b & mask))));
                    }
                }
            }
    }

    /// <summary>
    /// Forward: panel row kk holds column kk of the tile's rows n0 .. n0 + width, sixteen rows at a time. Two 8-lane
    /// gathers take 4 bytes (8 codes, columns kk .. kk + 7) from each of sixteen rows (.NET has no 512-bit gather);
    /// each column's nibbles are then shifted out of those 16 lanes, looked up and scaled by the rows' block scales
    /// (a vector of 16, one per row, reloaded when kk enters another block): a transpose done on the codes.
    /// </summary>
    void WriteTransposed(float* d, byte* packed, float* absmax, Vector512<float> table, int blockSize, long cols, long firstRow)
    {
        var rowBytes = Vector256.Create((int)(cols / 2)) * Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
        long eightRows = 8 * cols / 2;
        float* scale = stackalloc float[16];
        // Where rows are whole blocks, all sixteen rows enter a new block together; else their scales are read per 8
        // columns (8 columns from a multiple of 8 never straddle a block: block sizes are multiples of 16).
        bool rowsAreBlocks = cols % blockSize == 0;
        long blocksPerRow = cols / blockSize;
        int shift = BitOperations.IsPow2(blockSize) ? BitOperations.Log2((uint)blockSize) : -1;
        fixed (int* rowAt = _rowAt, n0s = _panelN0, widths = _panelWidth)
            for (int p = 0; p < _panelN0.Length; p++)
                for (int g = 0; g < widths[p]; g += 16)
                {
                    long row0 = firstRow + n0s[p] + g;
                    var scales = Vector512<float>.Zero;
                    long block = -1;
                    int* at = rowAt + p * K;
                    float* dg = d + g;
                    byte* first = packed + row0 * cols / 2;
                    for (int kk = 0; kk < K; kk += 8, first += 4)
                    {
                        long b = shift >= 0 ? (row0 * cols + kk) >> shift : (row0 * cols + kk) / blockSize;
                        if (b != block || !rowsAreBlocks)
                        {
                            if (rowsAreBlocks)
                            {
                                // Row i's block is b + i rows of blocks on: no division per row.
                                float* s0 = absmax + b;
                                for (int i = 0; i < 16; i++) scale[i] = s0[i * blocksPerRow];
                            }
                            else for (int i = 0; i < 16; i++) scale[i] = absmax[((row0 + i) * cols + kk) / blockSize];
                            scales = Vector512.Load(scale);
                            block = b;
                        }
                        var codes = Vector512.Create(Avx2.GatherVector256((int*)first, rowBytes, 1), Avx2.GatherVector256((int*)(first + eightRows), rowBytes, 1));
                        // The lanes' low byte holds columns kk (high nibble) and kk + 1 (low nibble), the next byte kk + 2 and
                        // kk + 3, ...; vpermps reads only an index's low 4 bits, so the nibbles need no mask.
                        Avx512F.Store(dg + at[kk], Avx512F.Multiply(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(codes, 4)), scales));
                        Avx512F.Store(dg + at[kk + 1], Avx512F.Multiply(Avx512F.PermuteVar16x32(table, codes), scales));
                        Avx512F.Store(dg + at[kk + 2], Avx512F.Multiply(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(codes, 12)), scales));
                        Avx512F.Store(dg + at[kk + 3], Avx512F.Multiply(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(codes, 8)), scales));
                        Avx512F.Store(dg + at[kk + 4], Avx512F.Multiply(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(codes, 20)), scales));
                        Avx512F.Store(dg + at[kk + 5], Avx512F.Multiply(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(codes, 16)), scales));
                        Avx512F.Store(dg + at[kk + 6], Avx512F.Multiply(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(codes, 28)), scales));
                        Avx512F.Store(dg + at[kk + 7], Avx512F.Multiply(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(codes, 24)), scales));
                    }
                }
    }

    /// <summary>
    /// <see cref="WriteRows"/> with AVX2, 16 values per step where the run allows (8 bytes of codes, as Nf4Kernel's AVX2
    /// path reads them), else 8: the unscaled 16-entry table looked up as two 8-entry halves picked by the code's bit 3,
    /// then each 8 values times their block's scale (fl(code * absmax), the product the plain path stores). Scaling the
    /// lookup's result rather than the table takes one multiply per 8 values and no branch on the block: a 24-wide run
    /// enters a new block at every row and sometimes within it.
    /// </summary>
    void WriteRows8(float* d, byte* packed, float* absmax, float* code, int blockSize, long cols, long firstRow)
    {
        var c0 = Avx.LoadVector256(code);
        var c1 = Avx.LoadVector256(code + 8);
        var mask = Vector128.Create((byte)15);
        // Block sizes are powers of two (Nf4Options): a value's block is its index shifted.
        Debug.Assert(BitOperations.IsPow2(blockSize));
        int shift = BitOperations.Log2((uint)blockSize);
        long half = cols / 2;
        fixed (int* rowAt = _rowAt, n0s = _panelN0, widths = _panelWidth)
            for (int p = 0; p < _panelN0.Length; p++)
            {
                // MKL's AVX2 panels are 8, 16 or 24 wide: whole 16s, then an 8 where the width has one. The run's value
                // index and code pointer step a row at a time (recomputing them per row, with the division's sign fix-up,
                // and re-reading the loop's bounds from the stack cost as much as the lookups of a 24-wide run).
                int w = widths[p], sixteens = w & ~15;
                bool eight = (w & 8) != 0;
                int* at = rowAt + p * K;
                long e = firstRow * cols + n0s[p];
                byte* src = packed + e / 2;
                for (int kk = 0; kk < K; kk++, e += cols, src += half)
                {
                    float* dst = d + at[kk];
                    for (int j = 0; j < sixteens; j += 16)
                    {
                        var b = Vector128.CreateScalarUnsafe(*(ulong*)(src + j / 2)).AsByte();
                        var hi = Vector128.ShiftRightLogical(b.AsUInt16(), 4).AsByte() & mask;
                        var codes = Sse2.UnpackLow(hi, b & mask);   // h0 l0 h1 l1 ... h7 l7: 16 indices
                        var first = Lookup(c0, c1, Avx2.ConvertToVector256Int32(codes));
                        var second = Lookup(c0, c1, Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(codes, 8)));
                        Avx.Store(dst + j, Avx.Multiply(first, Vector256.Create(absmax[(e + j) >> shift])));
                        Avx.Store(dst + j + 8, Avx.Multiply(second, Vector256.Create(absmax[(e + j + 8) >> shift])));
                    }
                    if (eight)
                    {
                        var b = Vector128.CreateScalarUnsafe(*(uint*)(src + sixteens / 2)).AsByte();
                        var hi = Vector128.ShiftRightLogical(b.AsUInt16(), 4).AsByte() & mask;
                        var v = Lookup(c0, c1, Avx2.ConvertToVector256Int32(Sse2.UnpackLow(hi, b & mask)));
                        Avx.Store(dst + sixteens, Avx.Multiply(v, Vector256.Create(absmax[(e + sixteens) >> shift])));
                    }
                }
            }
    }

    /// <summary>
    /// <see cref="WriteTransposed"/> with AVX2: one 8-lane gather takes 4 bytes (8 codes, columns kk .. kk + 7) from
    /// each of eight rows; each column's nibbles are shifted out of the lanes, looked up in the unscaled table's halves
    /// (bit 3 of the nibble, shifted to the sign bit, picks the half) and scaled by the eight rows' block scales. For
    /// each 8 columns the panel's row groups are written in turn, so each panel row is written whole before the next
    /// (group by group over the whole panel, each pass wrote a third of every row: lines were fetched three times).
    /// </summary>
    void WriteTransposed8(float* d, byte* packed, float* absmax, float* code, int blockSize, long cols, long firstRow)
    {
        var c0 = Avx.LoadVector256(code);
        var c1 = Avx.LoadVector256(code + 8);
        var rowBytes = Vector256.Create((int)(cols / 2)) * Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
        int widest = _panelWidth.Max();
        float* scale = stackalloc float[widest];
        bool rowsAreBlocks = cols % blockSize == 0;
        long blocksPerRow = cols / blockSize;
        long eightRows = 8 * cols / 2;
        int shift = BitOperations.IsPow2(blockSize) ? BitOperations.Log2((uint)blockSize) : -1;
        fixed (int* rowAt = _rowAt, n0s = _panelN0, widths = _panelWidth)
            for (int p = 0; p < _panelN0.Length; p++)
            {
                int w = widths[p];
                long row0 = firstRow + n0s[p];
                int* at = rowAt + p * K;
                byte* first = packed + row0 * cols / 2;
                long block = -1;
                for (int kk = 0; kk < K; kk += 8, first += 4)
                {
                    // The panel's rows' scales for these 8 columns (8 columns from a multiple of 8 never straddle a block:
                    // block sizes are multiples of 16); where rows are whole blocks, all rows enter a new block together.
                    long b = shift >= 0 ? (row0 * cols + kk) >> shift : (row0 * cols + kk) / blockSize;
                    if (b != block || !rowsAreBlocks)
                    {
                        if (rowsAreBlocks)
                        {
                            float* s0 = absmax + b;
                            for (int i = 0; i < w; i++) scale[i] = s0[i * blocksPerRow];
                        }
                        else for (int i = 0; i < w; i++) scale[i] = absmax[((row0 + i) * cols + kk) / blockSize];
                        block = b;
                    }
                    // The eight panel rows' starts, loaded once for all the row groups.
                    float* o0 = d + at[kk], o1 = d + at[kk + 1], o2 = d + at[kk + 2], o3 = d + at[kk + 3],
                        o4 = d + at[kk + 4], o5 = d + at[kk + 5], o6 = d + at[kk + 6], o7 = d + at[kk + 7];
                    byte* src = first;
                    for (int g = 0; g < w; g += 8, src += eightRows)
                    {
                        var codes = Avx2.GatherVector256((int*)src, rowBytes, 1);
                        var scales = Avx.LoadVector256(scale + g);
                        // Column kk's nibble is bits 4-7 of each lane, kk + 1's bits 0-3, kk + 2's bits 12-15, ...
                        Avx.Store(o0 + g, Avx.Multiply(Nibble(c0, c1, codes, 4, 24), scales));
                        Avx.Store(o1 + g, Avx.Multiply(Nibble(c0, c1, codes, 0, 28), scales));
                        Avx.Store(o2 + g, Avx.Multiply(Nibble(c0, c1, codes, 12, 16), scales));
                        Avx.Store(o3 + g, Avx.Multiply(Nibble(c0, c1, codes, 8, 20), scales));
                        Avx.Store(o4 + g, Avx.Multiply(Nibble(c0, c1, codes, 20, 8), scales));
                        Avx.Store(o5 + g, Avx.Multiply(Nibble(c0, c1, codes, 16, 12), scales));
                        Avx.Store(o6 + g, Avx.Multiply(Nibble(c0, c1, codes, 28, 0), scales));
                        Avx.Store(o7 + g, Avx.Multiply(Nibble(c0, c1, codes, 24, 4), scales));
                    }
                }
            }
    }

    /// <summary>
    /// The table value of each lane's nibble at bits <paramref name="at"/> .. + 3: vpermps reads an index's low 3 bits,
    /// the blend the sign bit, where <paramref name="toSign"/> = 28 - at moves the nibble's bit 3.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Nibble(Vector256<float> t0, Vector256<float> t1, Vector256<int> codes,
        [System.Diagnostics.CodeAnalysis.ConstantExpected] byte at, [System.Diagnostics.CodeAnalysis.ConstantExpected] byte toSign)
    {
        var index = Avx2.ShiftRightLogical(codes, at);
        return Avx.BlendVariable(Avx2.PermuteVar8x32(t0, index), Avx2.PermuteVar8x32(t1, index), Avx2.ShiftLeftLogical(codes, toSign).AsSingle());
    }

    /// <summary>16-entry table lookup of codes 0..15: permute within each half, pick the half by bit 3.</summary>
    static Vector256<float> Lookup(Vector256<float> t0, Vector256<float> t1, Vector256<int> idx) =>
        Avx.BlendVariable(Avx2.PermuteVar8x32(t0, idx), Avx2.PermuteVar8x32(t1, idx), Avx2.ShiftLeftLogical(idx, 28).AsSingle());

    /// <summary>C (ldc) = A [m, K] (lda) times this tile, plus beta C.</summary>
    public void Multiply(float* a, int m, int lda, float beta, float* c, int ldc)
    {
        if (_data == 0) throw new ObjectDisposedException(nameof(Nf4PanelTile));
        PackedGemm.ComputePacked(m, N, K, a, lda, (float*)_data, beta, c, ldc);
        Interlocked.Increment(ref _products);
    }

    static long _products;

    /// <summary>GEMMs run on panel tiles in this process (tests check the path ran).</summary>
    internal static long Products => Interlocked.Read(ref _products);

    /// <summary>The whole packed buffer, header and padding included (tests compare it with MKL's own pack).</summary>
    internal ReadOnlySpan<byte> Bytes => new((void*)_data, checked((int)_length));

    /// <summary>Packs a dense fp32 tile ([n, k] forward, [k, n] backward) into this buffer with MKL's own pack, as the tests' reference.</summary>
    internal void PackDense(TorchSharp.torch.Tensor dense)
    {
        using var c = dense.contiguous();
        PackedGemm.PackB(Forward, 128, N, K, (float*)KernelSupport.Address(c), Forward ? K : N, (float*)_data);
    }

    public void Dispose()
    {
        if (_data != 0) Libc.Unmap(_data, _length);
        _data = 0;
    }

    /// <summary>
    /// The panel tiles of one calling thread, a cache per team slot: a slot's tiles are learnt and used only on that
    /// slot's thread (the team's tile GEMMs run single-threaded there, and MKL's layout follows its thread count).
    /// Keyed by orientation, shape and team size; a shape whose layout the dequantiser cannot write is remembered as null.
    /// </summary>
    internal sealed class Slots : IDisposable
    {
        readonly Dictionary<(bool, int, int, int), Nf4PanelTile?>[] _bySlot;
        readonly Queue<(bool, int, int, int)>[] _order;
        readonly SharedPages?[] _pages;

        public Slots(int team)
        {
            _bySlot = Enumerable.Range(0, team).Select(_ => new Dictionary<(bool, int, int, int), Nf4PanelTile?>()).ToArray();
            _order = Enumerable.Range(0, team).Select(_ => new Queue<(bool, int, int, int)>()).ToArray();
            _pages = Enumerable.Range(0, team).Select(_ => SharedPages.Create()).ToArray();
        }

        public int Team => _bySlot.Length;

        /// <summary>Bytes of tile data this thread's slots hold: their shared pages and any tile's own (the planner's dequantisation buffer term).</summary>
        public long Bytes => _bySlot.Sum(s => s.Values.Sum(t => t?.DataBytes ?? 0)) + _pages.Sum(p => p?.Bytes ?? 0);

        /// <summary>Slot <paramref name="slot"/>'s tile for this product, learnt on first use; null: dequantise into a plain buffer.</summary>
        public Nf4PanelTile? Get(int slot, bool forward, int m, int n, int k)
        {
            var cache = _bySlot[slot];
            var key = (forward, n, k, Team);
            if (cache.TryGetValue(key, out var tile)) return tile;
            if (cache.Count >= MaxPerSlot && _order[slot].TryDequeue(out var oldest) && cache.Remove(oldest, out var old)) old?.Dispose();
            tile = Learn(forward, m, n, k, _pages[slot]);
            cache[key] = tile;
            _order[slot].Enqueue(key);
            return tile;
        }

        public void Dispose()
        {
            foreach (var s in _bySlot)
            {
                foreach (var t in s.Values) t?.Dispose();
                s.Clear();
            }
            foreach (var p in _pages) p?.Dispose();
        }
    }

    /// <summary>
    /// One slot's memory file, mapped under the data of every tile the slot learns: the slot uses one tile at a time
    /// (write, multiply, next), so its tiles can share physical pages, and whatever shape comes next is written into
    /// pages that are still in cache (each tile its own pages cycled ~10 MiB per slot through the cache at the 116M
    /// shape: bench/PeftSharp.Bench panel-write measures warm against cycling). MKL's kernels read a layout's padding as
    /// zeros, so a tile taking the pages over from another zeroes its padding first (Nf4PanelTileTests fills the pages
    /// with NaN and checks the products).
    /// </summary>
    internal sealed class SharedPages : IDisposable
    {
        public int File { get; private set; }
        public long Bytes { get; private set; }
        /// <summary>The tile that wrote the pages last (its padding is zero as long as it is the one writing).</summary>
        public Nf4PanelTile? Last { get; set; }

        SharedPages(int fd) => File = fd;

        /// <summary>A slot's file, or null where the system has no memory files (tiles then keep their own pages).</summary>
        public static SharedPages? Create()
        {
            if (!OperatingSystem.IsLinux()) return null;
            int fd = Libc.MemoryFile("peftsharp-nf4-panels");
            return fd < 0 ? null : new SharedPages(fd);
        }

        /// <summary>Grows the file to at least <paramref name="bytes"/> (never shrinks: mapped tiles keep their range); false where it could not.</summary>
        public bool Fit(long bytes)
        {
            if (File < 0) return false;
            if (bytes <= Bytes) return true;
            if (!Libc.Resize(File, bytes)) return false;
            Bytes = bytes;
            return true;
        }

        public void Dispose()
        {
            if (File >= 0) Libc.Close(File);
            File = -1;
        }
    }
}
