// Package node is the lab's node agent: a small kubelet that registers a Node,
// keeps its Lease and status fresh, and runs the pods bound to it as host
// processes, each pod in its own network namespace and each container in its
// own mount and UTS namespaces.
//
// It is not a container runtime. An image name is mapped to a local executable
// through the image table (testbed/images.yaml); a container is that
// executable, started by `ktlab run-container <spec.json>` in a session of its
// own so that it outlives the agent. Containers see the node's filesystem,
// except those of an image whose filesystem holds nothing but its own program
// (rootfs: empty) that run something else: they get an empty root of their
// own (rootfs.go). Everything the agent needs to find its
// pods again after a restart is kept under the state directory:
//
//	<state>/ipam.json                          pod IP allocations (node podCIDR)
//	<state>/agent.lock                         flock held by the running agent (one per state dir)
//	<state>/mounts.lock                        flock serialising mountpoint creation/removal
//	<state>/images/<id>-<version>/<name>       lab-built executables images run ({ktlab},
//	                                           {env:NAME}), copied where every user can run them
//	<state>/pods/<uid>/pod.json                namespace, name, uid, netns, link, IP, mount paths
//	<state>/pods/<uid>/{resolv.conf,hosts,hostname}
//	<state>/pods/<uid>/volumes/<volume>/       volume contents (bind-mounted into containers)
//	<state>/pods/<uid>/mountdirs               directories/files run-container created on the host
//	<state>/pods/<uid>/containers/<name>/<n>/  run n of a container:
//	        spec.json      the RunSpec given to run-container
//	        runner.json    run-container's pid and start time (written by the agent)
//	        workload.json  the workload's pid, start time and mount namespace (run-container)
//	        exit.json      exit code, signal, finish time (run-container, when the workload ends)
//	        runner.log     run-container's own diagnostics
//	        rootfs/        where run-container mounts the container's own, empty
//	                       root (an image with rootfs: empty; see rootfs.go)
//	<state>/pods/<uid>/logs/<name>/<n>.log     the container's stdout and stderr
//
// Network safety: the agent refuses to run unless it is inside the lab's host
// network namespace (labnet.HostNS), and every `ip` command it runs names its
// namespace explicitly (`ip -n ...`), so the machine's root network namespace
// is never touched.
package node
