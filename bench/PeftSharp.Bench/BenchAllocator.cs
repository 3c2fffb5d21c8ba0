namespace PeftSharp.Bench;

/// <summary>
/// The allocator a training bench runs on: by default `peft train`'s (Native/TensorAllocator: the buffer cache over
/// glibc's fixed mmap threshold; PEFTSHARP_TENSOR_CACHE=0 the threshold alone), so the bench's step is the product's;
/// `--allocator glibc` leaves glibc's default heap (what the benches ran on before the cache) for comparisons.
/// Call before the first tensor.
/// </summary>
static class BenchAllocator
{
    public static string Apply(BenchArgs a)
    {
        string choice = a.Get("allocator", "train");
        if (choice == "glibc") return "glibc's default heap (--allocator glibc)";
        if (choice != "train") throw new ArgumentException($"--allocator: '{choice}' is not train or glibc");
        PeftSharp.Native.TensorAllocator.Ensure();
        return PeftSharp.Native.TensorAllocator.Description;
    }
}
