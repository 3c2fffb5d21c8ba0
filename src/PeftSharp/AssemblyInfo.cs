using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("PeftSharp.Tests")]
