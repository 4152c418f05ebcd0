#!/usr/bin/env python3
"""Where the server's CPU goes, from `perf script -F comm,tid,ip,sym,dso` (with call
graphs) on stdin: by thread, and by component (each sample goes to one
component, decided from its stack). Usage: see benches/README.md, "Where the
server's CPU goes at 2,000/s"."""
import sys, re, collections

def frames_of(lines):
    out = []
    for l in lines:
        l = l.strip()
        m = re.match(r'^[0-9a-f]+\s+(.*?)\s+\((.*)\)$', l)
        if m:
            out.append((m.group(1), m.group(2)))
    return out

def thread_of(comm):
    if comm.startswith('agentbus-sqlite'): return 'SQLite writer + checkpoint threads'
    if comm.startswith('tokio-runtime-w') or comm.startswith('tokio-rt'): return 'tokio workers'
    return 'other: ' + comm

def component(comm, frames):
    syms = [s for s, _ in frames]
    leaf, dso = frames[0] if frames else ('?', '?')
    kernel = 'kernel' in dso or dso.startswith('[')
    joined = ' '.join(syms)
    def has(*pats): return any(p in joined for p in pats)
    if kernel:
        if has('sys_fsync', 'sys_fdatasync'): return 'kernel: fsync'
        if has('tcp_', 'sock_', 'skb', '__sys_sendto', '__sys_recvfrom', 'sock_write_iter', 'sock_read_iter', 'unix_stream'): return 'kernel: TCP loopback send/receive'
        if has('ksys_pwrite64', 'ksys_pread64', 'ext4_', 'vfs_write', 'vfs_read', 'filemap', '__x64_sys_pwrite', '__x64_sys_pread'): return 'kernel: file reads/writes (WAL, db)'
        if has('futex', 'schedule', 'finish_task_switch', 'epoll', 'try_to_wake_up', 'nanosleep', 'sched_'): return 'kernel: thread switches, futex, epoll, timers'
        if has('page_fault', 'exc_page', 'do_anonymous', 'madvise', 'munmap', 'mmap'): return 'kernel: page faults, mmap/madvise'
        return 'kernel: other'
    if re.search(r'\bsqlite3|rusqlite', leaf): return 'SQLite (user space)'
    if 'checkpoint' in joined and comm.startswith('agentbus-sqlite'): return 'SQLite checkpoint thread (user)'
    if re.search(r'_rjem_|\bje_|jemalloc|^malloc|^free|^calloc|^realloc|sdallocx', leaf): return 'allocator (jemalloc)'
    if re.search(r'memcpy|memmove|memset|memcmp|bcmp', leaf):
        # charge memcpy to its caller's component
        if len(frames) > 1:
            return component(comm, frames[1:])
        return 'memcpy (libc)'
    if re.search(r'serde_json|serde::', leaf): return 'JSON (serde_json)'
    if re.search(r'prost|encoded_len|::encode_raw|::merge_field|::decode', leaf): return 'protobuf (prost)'
    if re.search(r'\bh2::|hyper::|hyper_util|tonic::|\bhttp::|tower|axum|bytes::|httparse', leaf): return 'HTTP/2 + gRPC framing (h2, hyper, tonic, tower)'
    if re.search(r'tracing|opentelemetry', leaf): return 'tracing'
    if re.search(r'tokio::|mio::|parking_lot|std::sync|std::thread|crossbeam', leaf): return 'tokio runtime, channels, locks'
    if re.search(r'hdrhistogram|prometheus', leaf): return 'metrics'
    if re.search(r'agentbus', leaf): return 'agentbus (app, store, transport code)'
    if re.search(r'uuid|rand|chacha|getrandom', leaf): return 'ids (uuid, rng)'
    if re.search(r'core::|alloc::|hashbrown|std::', leaf):
        # generic library code: charge to the first frame that names a crate
        for s, _ in frames[1:]:
            for pat, name in [(r'serde_json', 'JSON (serde_json)'), (r'prost', 'protobuf (prost)'),
                              (r'\bh2::|hyper|tonic::|\bhttp::|tower|axum', 'HTTP/2 + gRPC framing (h2, hyper, tonic, tower)'),
                              (r'sqlite', 'SQLite (user space)'), (r'tokio::', 'tokio runtime, channels, locks'),
                              (r'tracing', 'tracing'), (r'agentbus', 'agentbus (app, store, transport code)')]:
                if re.search(pat, s): return name
        return 'Rust std/core (unattributed)'
    if leaf in ('[unknown]', '?'): return 'unknown'
    if 'libc.so' in dso or 'libm.so' in dso or 'vdso' in dso: return 'libc (syscall wrappers, pthread locks, clock)'
    if '::' not in leaf and 'agentbus' in dso: return 'SQLite (user space)'  # the only C code linked in besides jemalloc
    return 'other user: ' + leaf[:40]

def main():
    by_thread = collections.Counter(); by_comp = collections.Counter(); by_tc = collections.Counter()
    total = 0
    comm = None; lines = []
    def flush():
        nonlocal total
        if comm is None: return
        fr = frames_of(lines)
        t = thread_of(comm); c = component(comm, fr)
        by_thread[t] += 1; by_comp[c] += 1; by_tc[(t, c)] += 1; total += 1
    for raw in sys.stdin:
        if not raw.strip():
            continue
        if not raw[0].isspace():
            flush(); comm = raw.split()[0] if raw.split() else '?'; lines = []
            # comm may contain spaces; take the text before the tid
            m = re.match(r'^(.*?)\s+\d+', raw)
            if m: comm = m.group(1).strip()
        else:
            lines.append(raw)
    flush()
    per = float(sys.argv[1]) if len(sys.argv) > 1 else None  # µs of server CPU per message
    def show(title, counter):
        print(f'\n{title} ({total} samples)')
        for k, n in counter.most_common():
            extra = f'  {per * n / total:6.1f} µs/msg' if per else ''
            print(f'  {100.0 * n / total:5.1f} %{extra}  {k}')
    show('by thread', by_thread)
    show('by component', by_comp)
    show('by thread and component (top 25)', collections.Counter(dict(by_tc.most_common(25))))
main()
