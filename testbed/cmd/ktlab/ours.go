package main

// ours maps the lab's own commands to their entry points.
var ours = map[string]func(args []string) int{}
