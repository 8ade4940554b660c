// bpf/probe.h — what the running kernel offers efuse's BPF programs.
//
// Owns: finding the kernel's BTF and, in it, the FUSE tracepoints efuse's
// programs attach to (tp_btf/fuse_request_send, tp_btf/fuse_request_end) and
// the struct fuse_req they read. Read-only probing; thread-safe.
#ifndef EFUSE_BPF_PROBE_H_
#define EFUSE_BPF_PROBE_H_

#include <string>

namespace efuse::bpf {

struct BpfSupport {
  bool vmlinux_btf = false;          // /sys/kernel/btf/vmlinux parsed
  bool fuse_request_send = false;    // btf_trace_fuse_request_send present
  bool fuse_request_end = false;     // btf_trace_fuse_request_end present
  bool fuse_req_struct = false;      // struct fuse_req present (CO-RE target)
  std::string error;                 // why BTF could not be read
  bool Usable() const { return vmlinux_btf && fuse_request_send && fuse_request_end && fuse_req_struct; }
};

BpfSupport ProbeBpf();

}  // namespace efuse::bpf

#endif  // EFUSE_BPF_PROBE_H_
