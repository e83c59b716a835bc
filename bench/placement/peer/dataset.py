"""Deterministic dataset of the placement benchmark: hosts and requests.

Plinth's Rust side implements the very same generator; DATASET.md is the normative
table. Both functions are pure: the same index always gives the same record, with no
randomness and no dependence on N (host i is the same whatever the number of hosts).

    host(i)     -> dict   the i-th compute host, i in 0..N
    request(k)  -> dict   the k-th placement request, k in 0..

And the translation into OpenStack Placement terms (flat model: one root resource
provider per host, no nested NUMA or GPU providers):

    placement_inventories(h) -> {resource class: inventory record}
    placement_traits(h)      -> [trait, ...]
    placement_query(r)       -> (resources string, required string)

Run as a script it prints the records as JSON lines, e.g.
    python3 dataset.py hosts 20
    python3 dataset.py requests 40
Standard library only.
"""

import json
import sys
import uuid

# --- constants ----------------------------------------------------------------------

SOCKETS = 2
CORES_PER_SOCKET = 16
THREADS_PER_CORE = 2
CPUS = SOCKETS * CORES_PER_SOCKET * THREADS_PER_CORE  # 64

# NUMA node n holds CPUs [16n, 16n+16) (first hyperthreads) and [32+16n, 32+16n+16)
# (their siblings): node 0 = 0..15 + 32..47, node 1 = 16..31 + 48..63. CPU c < 32 and
# CPU c + 32 are the two threads of one core.
NUMA_NODES = 2


def _numa_cpus(node):
    base = node * CORES_PER_SOCKET
    return list(range(base, base + CORES_PER_SOCKET)) + list(
        range(CPUS // 2 + base, CPUS // 2 + base + CORES_PER_SOCKET)
    )


GIB = 1024  # MiB per GiB

# profile name -> (memory MiB, disk GiB, dedicated CPUs, gpu class or None, gpu count,
#                  traits)
PROFILES = {
    "general": (512 * GIB, 2000, [], None, 0, ["HW_CPU_X86_AVX2"]),
    "pinned": (
        512 * GIB,
        2000,
        list(range(16, 32)) + list(range(48, 64)),  # all of NUMA node 1
        None,
        0,
        ["HW_CPU_X86_AVX2", "CUSTOM_PINNED"],
    ),
    "gpu-a100": (1024 * GIB, 4000, [], "nvidia-a100-80gb", 4, ["HW_CPU_X86_AVX2", "CUSTOM_GPU"]),
    "gpu-h100": (1024 * GIB, 4000, [], "nvidia-h100-80gb", 8, ["HW_CPU_X86_AVX2", "CUSTOM_GPU"]),
}


def profile_of_host(i):
    """i % 10: 0..=5 general, 6..=7 pinned, 8 gpu-a100, 9 gpu-h100."""
    r = i % 10
    if r <= 5:
        return "general"
    if r <= 7:
        return "pinned"
    if r == 8:
        return "gpu-a100"
    return "gpu-h100"


def host_name(i):
    return "bench-host-%05d" % i


# A fixed namespace so that host uuids are stable across runs and implementations:
# uuid5(NAMESPACE, name). Value: uuid5(NAMESPACE_URL, "https://plinth.invalid/bench/placement").
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://plinth.invalid/bench/placement")
AGGREGATE_UUID = str(uuid.uuid5(NAMESPACE, "bench-aggregate"))


def host_uuid(i):
    return str(uuid.uuid5(NAMESPACE, host_name(i)))


def host(i):
    """The i-th host. Memory and GPUs are split evenly over the two NUMA nodes."""
    profile = profile_of_host(i)
    memory_mib, disk_gib, dedicated, gpu_class, gpu_count, traits = PROFILES[profile]
    numa = []
    for n in range(NUMA_NODES):
        per_node = gpu_count // NUMA_NODES
        numa.append(
            {
                "node": n,
                "cpus": _numa_cpus(n),
                "memory_mib": memory_mib // NUMA_NODES,
                # GPU j lives on node j // (gpu_count / 2): a100 0,1 | 2,3; h100 0..3 | 4..7
                "gpus": list(range(n * per_node, (n + 1) * per_node)),
            }
        )
    return {
        "index": i,
        "name": host_name(i),
        "uuid": host_uuid(i),
        "profile": profile,
        "sockets": SOCKETS,
        "cores_per_socket": CORES_PER_SOCKET,
        "threads_per_core": THREADS_PER_CORE,
        "cpus": CPUS,
        "dedicated_cpus": list(dedicated),
        "memory_mib": memory_mib,
        "disk_gib": disk_gib,
        "gpu_class": gpu_class,
        "gpu_count": gpu_count,
        "numa": numa,
        "traits": list(traits),
    }


# flavor -> (shared vCPUs, dedicated vCPUs, memory MiB, disk GiB, {gpu class: count},
#            required traits)
FLAVORS = {
    "small": (2, 0, 4096, 20, {}, ["HW_CPU_X86_AVX2"]),
    "medium": (8, 0, 32768, 80, {}, ["HW_CPU_X86_AVX2"]),
    "large": (32, 0, 131072, 200, {}, ["HW_CPU_X86_AVX2"]),
    "pinned": (0, 8, 32768, 80, {}, ["HW_CPU_X86_AVX2", "CUSTOM_PINNED"]),
    "gpu-a100": (16, 0, 131072, 200, {"nvidia-a100-80gb": 1}, ["HW_CPU_X86_AVX2", "CUSTOM_GPU"]),
    "gpu-h100": (16, 0, 131072, 200, {"nvidia-h100-80gb": 2}, ["HW_CPU_X86_AVX2", "CUSTOM_GPU"]),
}


def flavor_of_request(k):
    """k % 20: 0..=9 small, 10..=14 medium, 15..=16 large, 17 pinned, 18 gpu-a100,
    19 gpu-h100."""
    r = k % 20
    if r <= 9:
        return "small"
    if r <= 14:
        return "medium"
    if r <= 16:
        return "large"
    if r == 17:
        return "pinned"
    if r == 18:
        return "gpu-a100"
    return "gpu-h100"


def request(k):
    flavor = flavor_of_request(k)
    vcpus, pcpus, memory_mib, disk_gib, gpus, required = FLAVORS[flavor]
    return {
        "k": k,
        "flavor": flavor,
        "vcpus": vcpus,  # shared (floating, overcommittable) vCPUs
        "pcpus": pcpus,  # dedicated (pinned) vCPUs
        "memory_mib": memory_mib,
        "disk_gib": disk_gib,
        "gpus": dict(gpus),
        "required_traits": list(required),
    }


# --- OpenStack Placement translation (flat model) -------------------------------------

VCPU_ALLOCATION_RATIO = 4.0


def gpu_resource_class(gpu_class):
    """nvidia-a100-80gb -> CUSTOM_GPU_NVIDIA_A100_80GB"""
    return "CUSTOM_GPU_" + gpu_class.upper().replace("-", "_")


def _inv(total, ratio=1.0):
    return {
        "total": total,
        "reserved": 0,
        "min_unit": 1,
        "max_unit": total,
        "step_size": 1,
        "allocation_ratio": ratio,
    }


def placement_inventories(h):
    """Root-provider inventory: VCPU = CPUs not dedicated (ratio 4.0), PCPU = dedicated
    CPUs (only when any, ratio 1.0), MEMORY_MB, DISK_GB and one CUSTOM_GPU_* per GPU
    class (ratio 1.0, reserved 0 everywhere)."""
    inv = {}
    shared = h["cpus"] - len(h["dedicated_cpus"])
    inv["VCPU"] = _inv(shared, VCPU_ALLOCATION_RATIO)
    if h["dedicated_cpus"]:
        inv["PCPU"] = _inv(len(h["dedicated_cpus"]))
    inv["MEMORY_MB"] = _inv(h["memory_mib"])
    inv["DISK_GB"] = _inv(h["disk_gib"])
    if h["gpu_count"]:
        inv[gpu_resource_class(h["gpu_class"])] = _inv(h["gpu_count"])
    return inv


def placement_traits(h):
    return list(h["traits"])


def custom_resource_classes():
    return sorted({gpu_resource_class(p[3]) for p in PROFILES.values() if p[3]})


def custom_traits():
    traits = set()
    for p in PROFILES.values():
        traits.update(t for t in p[5] if t.startswith("CUSTOM_"))
    return sorted(traits)


def placement_query(r):
    """(resources, required) for GET /allocation_candidates."""
    parts = []
    if r["vcpus"]:
        parts.append("VCPU:%d" % r["vcpus"])
    if r["pcpus"]:
        parts.append("PCPU:%d" % r["pcpus"])
    parts.append("MEMORY_MB:%d" % r["memory_mib"])
    parts.append("DISK_GB:%d" % r["disk_gib"])
    for cls, n in sorted(r["gpus"].items()):
        parts.append("%s:%d" % (gpu_resource_class(cls), n))
    return ",".join(parts), ",".join(r["required_traits"])


def main(argv):
    if len(argv) != 3 or argv[1] not in ("hosts", "requests"):
        sys.stderr.write("usage: dataset.py hosts|requests COUNT\n")
        return 2
    gen = host if argv[1] == "hosts" else request
    for i in range(int(argv[2])):
        sys.stdout.write(json.dumps(gen(i), sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
