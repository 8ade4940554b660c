#include "bpf/probe.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>

namespace efuse::bpf {

BpfSupport ProbeBpf() {
  BpfSupport s;
  btf* vmlinux = btf__load_vmlinux_btf();
  if (vmlinux == nullptr) {
    s.error = std::string("cannot load kernel BTF: ") + std::strerror(errno);
    return s;
  }
  s.vmlinux_btf = true;
  // A tp_btf program attaches by the tracepoint's btf_trace_<name> typedef.
  s.fuse_request_send = btf__find_by_name_kind(vmlinux, "btf_trace_fuse_request_send", BTF_KIND_TYPEDEF) > 0;
  s.fuse_request_end = btf__find_by_name_kind(vmlinux, "btf_trace_fuse_request_end", BTF_KIND_TYPEDEF) > 0;
  s.fuse_req_struct = btf__find_by_name_kind(vmlinux, "fuse_req", BTF_KIND_STRUCT) > 0;
  btf__free(vmlinux);
  return s;
}

}  // namespace efuse::bpf
