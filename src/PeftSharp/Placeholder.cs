namespace PeftSharp; internal static class Placeholder {}
