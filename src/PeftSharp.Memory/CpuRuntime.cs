namespace PeftSharp.Memory;

/// <summary>One named part of the runtime allowance of a plan (what the process holds besides tensors).</summary>
/// <param name="Name">What it is, e.g. "CUDA context + kernels", "libtorch + .NET after load".</param>
/// <param name="Bytes">Its size in bytes.</param>
/// <param name="Basis">Where the figure comes from (measured, given, a view it belongs to).</param>
public sealed record RuntimeTerm(string Name, long Bytes, string Basis);

/// <summary>
/// What a CPU training process holds besides its tensors, in named terms measured by `bench/runtime-memory.sh` (the
/// train-memory bench on the demo model: QLoRA, batch 16 x 12 tokens, 2 threads, 60 steps, then the final save and an
/// eval pass; a model that small leaves almost nothing but the runtime). Figures of that run:
/// resident set 150.4 MB once libtorch is loaded; 183.5 MB with the tokenizer and the 2.5 MB model loaded;
/// the .NET heap grew 6.4 -> ~21 MB over the steps until its first gen0 collection, after which 21.6 MB stay committed;
/// glibc's arenas (mallinfo2) 60.2 -> 70.8 MB; at step 60 the resident set was 233.3 MB, 15.8 MB above those terms and the
/// resident tensors; the final checkpoint save added 9.2 MB. The tensors themselves (weights, gradients, state,
/// activations) are the plan's other rows.
/// </summary>
internal static class CpuRuntime
{
    /// <summary>libtorch + .NET runtime resident once libtorch is loaded (150.4 MB in the bench). `peft train` replaces it
    /// with its own process's figure, measured before it plans.</summary>
    public const long DefaultAfterLoadBytes = 150_000_000;
    /// <summary>The name of the first term, which a run measures for itself (the rest is what the run adds to it).</summary>
    public const string AfterLoadName = "libtorch + .NET after load";
    /// <summary>Tokenizer, safetensors loader and model code (JIT-compiled), beyond the weights: 183.5 - 150.4 - 2.5 MB.</summary>
    public const long LoadingBytes = 31_000_000;
    /// <summary>The .NET GC's gen0 budget: managed allocations of every step (tensor handles, records) accumulate until the
    /// first gen0 collection, and the heap stays committed at about that size (21.6 MB).</summary>
    public const long ManagedHeapBytes = 22_000_000;
    /// <summary>glibc's malloc arenas under the small allocations of autograd and tensor metadata (+10.6 MB).</summary>
    public const long MallocArenaBytes = 11_000_000;
    /// <summary>What else the resident set gains over a run (tier-1 JIT code, oneDNN primitive caches, thread stacks):
    /// the remainder at step 60, 15.8 MB.</summary>
    public const long RunGrowthBytes = 16_000_000;
    /// <summary>The end of the run: the final checkpoint and artefact save (serialisation buffers, file pages), +9.2 MB.</summary>
    public const long SaveBytes = 9_000_000;

    /// <summary>
    /// 16-bit compute (`train --compute-dtype bf16|fp16`) only: glibc's arenas keep more freed memory under the 16-bit
    /// kernels. `COMPUTE=bf16|fp32 THREADS=1 STEPS=25 bench/runtime-memory.sh`, the same run in each dtype (2026-11-30):
    /// arenas after the model loaded -> at the last step 62.2 -> 93.6 MB in bf16 (+31.4) vs 62.6 -> 74.6 MB in fp32 (+12.0),
    /// while the bytes in use there grew alike (+9.6 vs +6.5): the difference is freed blocks kept, most of it from the
    /// first step (+15.7 vs +3.2 MB). Whole-run peaks 260.4 vs 242.0 MB; the demo's `peft train` measured +19.3 MB in bf16.
    /// Counted as the bf16 arena growth minus the fp32 one (<see cref="MallocArenaBytes"/> already holds the latter).
    /// Measured on the demo model; how it scales with the shape is not measured yet.
    /// </summary>
    public const long SixteenBitArenaBytes = 19_400_000;

    /// <summary>
    /// MKL's Intel code path, which PeftSharp's engine switches on for AMD CPUs (Kernels/MklCodePath), keeps GEMM buffers
    /// that MKL's generic path does not, growing with the LM head's width: `bench/plan-vs-measured.sh` with
    /// PEFTSHARP_MKL_INTEL_PATH unset vs 0, 2 threads (2026-11-30): h 320, vocab 8000: lora 567 vs 559 MB, full 540 vs 532
    /// (+8); h 320, vocab 32000: 1037 vs 1014 (+23); the 134M model (h 768, vocab 32000): lora 1014 vs 991, qlora 972 vs 946,
    /// full 2698 vs 2677 (+21..+26). None at 1 thread (979 vs 984, 2666 vs 2668) nor under bf16, whose large GEMMs run on
    /// oneDNN (703 and 795 MB either way). Fitted as 3 MB + 625 B per vocabulary entry; not measured beyond 2 threads.
    /// </summary>
    public static long MklIntelPathBytes(long vocabSize) => 3_000_000 + 625 * vocabSize;

    /// <summary>
    /// The share of a training run's transient peak that `peft train`'s buffer cache (the engine's
    /// Native/TensorBlockCache) may keep idle on top of the most bytes in use at once: its cap is the peak in use plus
    /// this share of that peak above what was in use after the first step (optimiser state and gradients allocated;
    /// counted from the steps' start, full fine-tuning's state made the slack ~500 MB at 134M against the plan's 40).
    /// Without it the cache must release a block whenever a step needs more of one size than it held at its peak, and
    /// maps and faults a fresh one: on lora-step 351 such misses in 7 steps and 0.92x glibc's heap; with 15%, 164
    /// misses and 0.99x (2,783 / 2,733 vs 2,806 / 2,745 tok/s, two alternated rounds) for +21 MB (453 vs 432 MB; the heap 548-561). The plan counts it as this share
    /// of the activations, loss buffers and dequantised tiles where step shapes vary (none for fixed shapes: PlanRequest.FixedShapes); `bench/plan-vs-measured.sh`'s eight runs measured +10..+35
    /// MB with it, within that term in each (2026-11-30). 30% since 2026-12-02: a cap a little short of the steps' set of
    /// sizes made the cache rebuild the same blocks every step (lora-step: 6 misses and 34 MB of pages moved per step
    /// at 15%; the 134M shape 5 misses, 53 MB, though only 1.5 MB short), and on a Firecracker VM (Zen 5) moved pages
    /// cost 12% of the step (0.876x glibc's heap); at 30% neither shape moves a page after the first step, for +12 MB and
    /// +1.5 MB resident.
    /// </summary>
    public const double BufferCacheSlackFraction = 0.3;

    /// <summary>The variable that turns the buffer cache off (read by the engine's Native/TensorAllocator too).</summary>
    public const string BufferCacheVariable = "PEFTSHARP_TENSOR_CACHE";

    /// <summary>Whether this machine's training processes run the buffer cache: the engine's condition (Linux x64,
    /// <see cref="BufferCacheVariable"/> not 0; the engine also needs libc10's imports, and falls back without them).</summary>
    public static bool BufferCache { get; } = OperatingSystem.IsLinux()
        && System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.X64
        && Environment.GetEnvironmentVariable(BufferCacheVariable) != "0";

    /// <summary>The variable that keeps MKL's generic path (read by the engine's Kernels/MklCodePath too).</summary>
    public const string MklIntelPathVariable = "PEFTSHARP_MKL_INTEL_PATH";

    /// <summary>Whether this machine's training processes run MKL's Intel path: the engine's condition (an AMD x86 CPU,
    /// Linux, <see cref="MklIntelPathVariable"/> not 0; the engine also needs libtorch's MKL and no matmul before it).</summary>
    public static bool MklIntelPath { get; } = OperatingSystem.IsLinux() && IsAmdCpu()
        && Environment.GetEnvironmentVariable(MklIntelPathVariable) != "0";

    /// <summary>
    /// Frozen fp32 weights packed for MKL (the engine's Kernels/PackedGemm): MKL's sgemm repacks its B operand, here the
    /// weight, into its kernel's panel layout at every call; a frozen weight can be packed once per orientation (x W^T
    /// forward, g W for the backward's input gradient) and every later call skips that copy. `lora-step-ab --off packed`
    /// (2026-11-30, 12 ABBA rounds): 324.7 vs 336.3 ms per step, on/off 1.036 at 1024 tokens per step; 1.157 at
    /// the 134M shape's 256 (h 768, vocab 32000), 1.18 at qlora-step's 116M shape's 128. The price is the packed copies: MKL's
    /// layout of a [out, in] fp32 weight touches its bytes again, once per orientation (measured: 1344 x 512: +2.7 MiB
    /// each; 32000 x 2048: +250 MiB each), so 2 x the frozen weights. Auto packs when that is at most
    /// <see cref="PackedWeightsMaxMemoryShare"/> of the machine's memory.
    /// </summary>
    public static long PackedWeightBytes(long frozenFp32WeightBytes) => 2 * frozenFp32WeightBytes;

    /// <summary>Auto packs the frozen weights when their packed copies take at most this share of the memory the process
    /// may use (.NET's view: physical memory or the container's limit): a 24 GB machine packs up to 3 GB of copies, i.e.
    /// models up to ~0.37B parameters in fp32 (SmolLM-135M: +0.9 GB), and keeps the memory of larger ones for the run.</summary>
    public const double PackedWeightsMaxMemoryShare = 0.125;

    /// <summary>Whether this machine's MKL can hold packed weights: libtorch's bundled MKL (Linux x64). The engine also
    /// checks that libtorch exports MKL's pack functions and skips packing without them.</summary>
    public static bool CanPackWeights { get; } = OperatingSystem.IsLinux()
        && System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.X64;

    /// <summary>
    /// Whether a CPU fp32 run packs its frozen weights: <paramref name="requested"/> when given (`--pack-weights on|off`),
    /// else (auto) when <see cref="CanPackWeights"/> and the packed copies of <paramref name="frozenFp32WeightBytes"/> fit
    /// in <see cref="PackedWeightsMaxMemoryShare"/> of <paramref name="memoryBytes"/> (default: this process's).
    /// </summary>
    public static bool PacksWeights(bool? requested, long frozenFp32WeightBytes, long? memoryBytes = null) =>
        frozenFp32WeightBytes > 0 && CanPackWeights && (requested ?? PackedWeightBytes(frozenFp32WeightBytes)
            <= PackedWeightsMaxMemoryShare * (memoryBytes ?? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes));

    /// <summary>cpuid leaf 0's vendor string is AuthenticAMD (ebx, edx, ecx).</summary>
    internal static bool IsAmdCpu()
    {
        if (!System.Runtime.Intrinsics.X86.X86Base.IsSupported) return false;
        var (_, ebx, ecx, edx) = System.Runtime.Intrinsics.X86.X86Base.CpuId(0, 0);
        return ebx == 0x68747541 && edx == 0x69746E65 && ecx == 0x444D4163;   // "Auth" "enti" "cAMD"
    }

    /// <summary>The terms of a training run; <paramref name="afterLoadBytes"/> = the process's own figure when it measured it;
    /// <paramref name="sixteenBitCompute"/> adds <see cref="SixteenBitArenaBytes"/>; a model's <paramref name="vocabSize"/>
    /// adds <see cref="MklIntelPathBytes"/> under fp32 compute where <paramref name="mklIntelPath"/> (default: this
    /// machine's, <see cref="MklIntelPath"/>).</summary>
    public static IReadOnlyList<RuntimeTerm> Training(long? afterLoadBytes = null, bool sixteenBitCompute = false, long vocabSize = 0, bool? mklIntelPath = null) =>
    [
        new(AfterLoadName, afterLoadBytes ?? DefaultAfterLoadBytes,
            afterLoadBytes is null ? "measured by bench/runtime-memory.sh" : "measured in this process"),
        new("model loading code", LoadingBytes, "tokenizer, loader, JIT-compiled model code"),
        new(".NET heap (gen0 budget)", ManagedHeapBytes, "grows each step until the first gen0 collection"),
        new("malloc arenas", MallocArenaBytes, "autograd nodes and tensor metadata"),
        new("growth over the run", RunGrowthBytes, "tier-1 JIT code, oneDNN caches, thread stacks"),
        new("end-of-run save", SaveBytes, "final checkpoint and artefact"),
        .. (sixteenBitCompute ? [new RuntimeTerm("malloc arenas, 16-bit kernels", SixteenBitArenaBytes, "freed blocks glibc keeps under bf16 compute")] : Array.Empty<RuntimeTerm>()),
        .. (vocabSize > 0 && !sixteenBitCompute && (mklIntelPath ?? MklIntelPath)
            ? [new RuntimeTerm("MKL GEMM buffers, Intel path on AMD", MklIntelPathBytes(vocabSize), "multi-threaded sgemm, with the LM head's width")]
            : Array.Empty<RuntimeTerm>()),
    ];
}
