// Command static is a statically linked program the node's tests run from
// volumes, in the empty root of a rootfs: empty image.
//
//	static serve <copy-to>   report what the container sees, copy itself to
//	                         <copy-to> (mode 0755), then wait for SIGTERM
//	static probe <file>      exit 0 if <file> exists, 1 if not
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: static serve <copy-to> | static probe <file>")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2])
	case "probe":
		if _, err := os.Stat(os.Args[2]); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
	default:
		os.Exit(2)
	}
}

func serve(copyTo string) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	entries, _ := os.ReadDir("/")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	fmt.Printf("uid=%d gid=%d\n", os.Getuid(), os.Getgid())
	fmt.Printf("root=%s\n", strings.Join(names, ","))
	if err := os.WriteFile("/written", nil, 0o644); err != nil {
		fmt.Printf("write /: %v\n", err)
	} else {
		fmt.Println("write /: ok")
	}
	if err := copySelf(copyTo); err != nil {
		fmt.Printf("copy: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("serving")
	<-sigs
}

func copySelf(to string) error {
	in, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := to + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, to)
}
