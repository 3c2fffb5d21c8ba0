# Writes fams.json (name, renderings with/without the system turn, Go template) from OllamaModelfile.cs, for main.go.
import json, re, sys
src = sys.argv[1] if len(sys.argv) > 1 else "../../../../../src/PeftSharp/IO/Gguf/OllamaModelfile.cs"
s = open(src).read()
body = s[s.index("Families ="):s.index("    ];", s.index("Families ="))]
body = re.sub(r"^\s*//.*$", "", body, flags=re.M)
probe = {"Sys": "You are a helpful assistant.", "U1": "Hello, how are you?",
         "A1": "I'm doing great. How can I help you today?", "U2": "I'd like to show off how chat templating works!"}
strs = []
for dollar, text in re.findall(r'(\$?)"((?:[^"\\]|\\.)*)"', body):
    v = json.loads('"' + text + '"')
    strs.append(re.sub(r"\{(Sys|U1|A1|U2)\}", lambda m: probe[m.group(1)], v) if dollar else v)
assert len(strs) % 5 == 0, len(strs)
fams = [dict(name=strs[i], with_=strs[i + 1], without=strs[i + 2], tmpl=strs[i + 3]) for i in range(0, len(strs), 5)]
json.dump(fams, open("fams.json", "w"))
