package kubeletserver

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/client-go/tools/remotecommand"
)

// initialSizeWait bounds the wait for the client's first terminal size.
const initialSizeWait = 250 * time.Millisecond

// runWithTTY runs c on a new pseudo-terminal (its own session, the terminal
// as controlling TTY), relays in -> terminal and terminal -> out, and applies
// resize events. With a TTY there is no separate stderr.
func runWithTTY(ctx context.Context, c *exec.Cmd, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize) error {
	ptmx, tty, err := openPTY()
	if err != nil {
		return err
	}
	// Clients send the terminal size right after the streams are set up; give
	// the first one a moment so that the command starts with the right size.
	if resize != nil {
		select {
		case size, ok := <-resize:
			if ok {
				setWinsize(ptmx, size)
			} else {
				resize = nil
			}
		case <-time.After(initialSizeWait):
		case <-ctx.Done():
		}
	}
	c.Stdin, c.Stdout, c.Stderr = tty, tty, tty
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = c.Start()
	tty.Close()
	if err != nil {
		ptmx.Close()
		return fmt.Errorf("start nsenter: %w", err)
	}

	done := make(chan struct{})
	defer close(done)
	if resize != nil {
		go func() {
			for {
				select {
				case size, ok := <-resize:
					if !ok {
						return
					}
					setWinsize(ptmx, size)
				case <-done:
					return
				}
			}
		}()
	}
	if in != nil {
		go io.Copy(ptmx, in) // ends when the stream or the terminal closes
	}
	// Output is always drained, even if the client did not ask for it, so
	// the command never blocks on a full terminal.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out2 := &relay{src: ptmx, dst: out, broken: cancel}
	out2.start()

	waitErr := waitKillingGroup(ctx, c, -c.Process.Pid)
	finishRelays([]*relay{out2})
	return exitError(waitErr)
}

// openPTY opens a new pseudo-terminal pair. The master stays non-blocking
// (it is never passed through File.Fd) so that closing it ends a pending read.
func openPTY() (ptmx, tty *os.File, err error) {
	ptmx, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	var (
		peer   int
		ptyNum uint32
		ioErr  error
	)
	raw, err := ptmx.SyscallConn()
	if err == nil {
		err = raw.Control(func(fd uintptr) {
			if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr != nil {
				return
			}
			// TIOCGPTPEER opens the peer without a /dev/pts path lookup.
			r, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
			if errno == 0 {
				peer = int(r)
			} else {
				peer = -1
				ptyNum, ioErr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
			}
		})
	}
	if err == nil {
		err = ioErr
	}
	if err != nil {
		ptmx.Close()
		return nil, nil, fmt.Errorf("set up pseudo-terminal: %w", err)
	}
	if peer >= 0 {
		return ptmx, os.NewFile(uintptr(peer), "/dev/pts/peer"), nil
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", ptyNum), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		ptmx.Close()
		return nil, nil, fmt.Errorf("open pseudo-terminal peer: %w", err)
	}
	return ptmx, tty, nil
}

func setWinsize(ptmx *os.File, size remotecommand.TerminalSize) {
	raw, err := ptmx.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
	})
}
