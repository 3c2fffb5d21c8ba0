package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type Msg struct{ Role, Content string }
type Fam struct {
	Name    string `json:"name"`
	With    string `json:"with_"`
	Without string `json:"without"`
	Tmpl    string `json:"tmpl"`
}

// collate as Ollama's template.go does today: system messages joined into .System and kept in .Messages.
func collate(msgs []Msg) (string, []Msg) {
	var sys []string
	var out []Msg
	for _, m := range msgs {
		if m.Role == "system" {
			sys = append(sys, m.Content)
		}
		if len(out) > 0 && out[len(out)-1].Role == m.Role {
			out[len(out)-1].Content += "\n\n" + m.Content
		} else {
			out = append(out, m)
		}
	}
	return strings.Join(sys, "\n\n"), out
}

func render(t *template.Template, msgs []Msg) string {
	sys, ms := collate(msgs)
	var b strings.Builder
	if err := t.Execute(&b, map[string]any{"System": sys, "Messages": ms}); err != nil {
		panic(err)
	}
	return b.String()
}

func main() {
	data, _ := os.ReadFile("fams.json")
	var fams []Fam
	json.Unmarshal(data, &fams)
	uau := []Msg{{"user", "Hello, how are you?"}, {"assistant", "I'm doing great. How can I help you today?"}, {"user", "I'd like to show off how chat templating works!"}}
	suau := append([]Msg{{"system", "You are a helpful assistant."}}, uau...)
	bad := 0
	for _, f := range fams {
		t := template.Must(template.New(f.Name).Parse(f.Tmpl))
		w, wo := render(t, suau), render(t, uau)
		okW, okWo := w == f.With, wo == f.Without
		fmt.Printf("%-8s with-system %v  without %v\n", f.Name, okW, okWo)
		if !okW {
			fmt.Printf("  got  %q\n  want %q\n", w, f.With)
			bad++
		}
		if !okWo {
			fmt.Printf("  got  %q\n  want %q\n", wo, f.Without)
			bad++
		}
	}
	os.Exit(bad)
}
