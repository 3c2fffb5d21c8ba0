using System.Collections.Immutable;
using System.Reflection.Metadata;
using System.Reflection.Metadata.Ecma335;
using System.Reflection.PortableExecutable;

namespace PeftSharp.Tests.Support;

/// <summary>
/// Finds the calls in an assembly that hand libtorch a TorchSharp <c>Scalar</c> nobody keeps alive (see
/// src/PeftSharp/Kernels/ScalarArgs.cs): an implicit number -> Scalar conversion, any <c>Tensor + x</c> or
/// <c>Tensor.add(Tensor)</c> / <c>add_(Tensor)</c> (TorchSharp makes the alpha = 1), and <c>-</c>, <c>*</c>,
/// <c>/</c>, <c>%</c> between a tensor and a number. Read from the compiled IL: a call, callvirt or newobj whose
/// operand is one of those member references (a 5-byte pattern; any other byte sequence would have to hit exactly one
/// of these few tokens).
/// </summary>
public static class ScalarTemporaries
{
    static readonly HashSet<string> Numbers = ["float64", "float32", "int32", "int64", "int16", "uint8", "int8", "bool"];

    /// <summary>"Type.Method: member(params)" for every such call in the assembly at <paramref name="path"/>,
    /// except inside types named in <paramref name="allowedTypes"/>.</summary>
    public static List<string> In(string path, params string[] allowedTypes)
    {
        using var pe = new PEReader(File.OpenRead(path));
        var md = pe.GetMetadataReader();
        var unsafeTokens = new Dictionary<int, string>();
        foreach (var handle in md.MemberReferences)
        {
            var mr = md.GetMemberReference(handle);
            if (mr.GetKind() != MemberReferenceKind.Method || mr.Parent.Kind != HandleKind.TypeReference) continue;
            string type = TypeName(md, (TypeReferenceHandle)mr.Parent);
            string name = md.GetString(mr.Name);
            var sig = mr.DecodeMethodSignature(new Names(md), null);
            var ps = sig.ParameterTypes;
            bool number = ps.Any(Numbers.Contains);
            bool isUnsafe = type switch
            {
                "TorchSharp.Scalar" => name == "op_Implicit",
                "TorchSharp.torch/Tensor" => name switch
                {
                    "op_Addition" => true,
                    "op_Subtraction" or "op_Multiply" or "op_Division" or "op_Modulus" => number,
                    "add" or "add_" => ps.Length == 1,
                    _ => false,
                },
                _ => false,
            };
            if (isUnsafe) unsafeTokens[MetadataTokens.GetToken(handle)] = $"{type}::{name}({string.Join(", ", ps)})";
        }
        var found = new List<string>();
        foreach (var typeHandle in md.TypeDefinitions)
        {
            var type = md.GetTypeDefinition(typeHandle);
            string typeName = FullName(md, type);
            if (allowedTypes.Any(a => typeName == a || typeName.StartsWith(a + "/", StringComparison.Ordinal))) continue;
            foreach (var methodHandle in type.GetMethods())
            {
                var method = md.GetMethodDefinition(methodHandle);
                if (method.RelativeVirtualAddress == 0) continue;
                var il = pe.GetMethodBody(method.RelativeVirtualAddress).GetILBytes();
                if (il is null) continue;
                for (int i = 0; i + 5 <= il.Length; i++)
                {
                    if (il[i] is not (0x28 or 0x6F or 0x73)) continue;   // call, callvirt, newobj
                    int token = BitConverter.ToInt32(il, i + 1);
                    if (unsafeTokens.TryGetValue(token, out var member))
                        found.Add($"{typeName}.{md.GetString(method.Name)}: {member}");
                }
            }
        }
        return found;
    }

    /// <summary>Fails naming every site <see cref="In"/> finds in the assembly at <paramref name="path"/>.</summary>
    public static void AssertNone(string path, params string[] allowedTypes)
    {
        var found = In(path, allowedTypes);
        Assert.True(found.Count == 0, "use ScalarArgs, TestScalars (or a using Scalar) at:\n" + string.Join("\n", found));
    }

    static string FullName(MetadataReader md, TypeDefinition t)
    {
        string name = md.GetString(t.Name);
        var declaring = t.GetDeclaringType();
        if (!declaring.IsNil) return FullName(md, md.GetTypeDefinition(declaring)) + "/" + name;
        string ns = md.GetString(t.Namespace);
        return ns.Length == 0 ? name : ns + "." + name;
    }

    static string TypeName(MetadataReader md, TypeReferenceHandle h)
    {
        var t = md.GetTypeReference(h);
        string name = md.GetString(t.Name);
        if (t.ResolutionScope.Kind == HandleKind.TypeReference) return TypeName(md, (TypeReferenceHandle)t.ResolutionScope) + "/" + name;
        string ns = md.GetString(t.Namespace);
        return ns.Length == 0 ? name : ns + "." + name;
    }

    /// <summary>Parameter types as short names: primitives as IL spells them, others by their full name.</summary>
    sealed class Names(MetadataReader md) : ISignatureTypeProvider<string, object?>
    {
        public string GetPrimitiveType(PrimitiveTypeCode c) => c switch
        {
            PrimitiveTypeCode.Double => "float64", PrimitiveTypeCode.Single => "float32", PrimitiveTypeCode.Int32 => "int32",
            PrimitiveTypeCode.Int64 => "int64", PrimitiveTypeCode.Int16 => "int16", PrimitiveTypeCode.Byte => "uint8",
            PrimitiveTypeCode.SByte => "int8", PrimitiveTypeCode.Boolean => "bool", _ => c.ToString(),
        };
        public string GetTypeFromReference(MetadataReader r, TypeReferenceHandle h, byte kind) => TypeName(md, h);
        public string GetTypeFromDefinition(MetadataReader r, TypeDefinitionHandle h, byte kind) => FullName(md, md.GetTypeDefinition(h));
        public string GetTypeFromSpecification(MetadataReader r, object? c, TypeSpecificationHandle h, byte kind) => "spec";
        public string GetSZArrayType(string e) => e + "[]";
        public string GetArrayType(string e, ArrayShape s) => e + "[,]";
        public string GetByReferenceType(string e) => e + "&";
        public string GetPointerType(string e) => e + "*";
        public string GetGenericInstantiation(string g, ImmutableArray<string> a) => $"{g}<{string.Join(",", a)}>";
        public string GetGenericTypeParameter(object? c, int i) => "!" + i;
        public string GetGenericMethodParameter(object? c, int i) => "!!" + i;
        public string GetFunctionPointerType(MethodSignature<string> s) => "fnptr";
        public string GetModifiedType(string m, string u, bool req) => u;
        public string GetPinnedType(string e) => e;
    }
}
