"""The Pod Security Standards' "restricted" profile (its "baseline" rules included), as code.

The rules as Kubernetes 1.32 documents them (concepts/security/pod-security-standards),
field by field, so that the manifests are checked the way the admission controller
checks a namespace labelled `pod-security.kubernetes.io/enforce: restricted`.
"""

# Baseline: capabilities a container may add.
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                         "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                         "SYS_CHROOT"}
# Restricted: the only capability a container may add (after dropping ALL).
RESTRICTED_CAPABILITIES = {"NET_BIND_SERVICE"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# Restricted: the only volume types.
VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                "persistentVolumeClaim", "projected", "secret"}
SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}


def violations(spec: dict, annotations: dict | None = None) -> list[str]:
    """Every way the pod spec `spec` (with its template's `annotations`) breaks the profile."""
    found = []
    pod = spec.get("securityContext", {})
    containers = [*spec.get("initContainers", []), *spec.get("containers", []),
                  *spec.get("ephemeralContainers", [])]

    # Baseline.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            found.append(f"host namespaces: {field}")
    if pod.get("windowsOptions", {}).get("hostProcess"):
        found.append("HostProcess: the pod")
    for name, value in (annotations or {}).items():
        if (name.startswith("container.apparmor.security.beta.kubernetes.io/")
                and value != "runtime/default" and not value.startswith("localhost/")):
            found.append(f"AppArmor: {name}={value}")
    found += _selinux_and_sysctls(pod, "the pod")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            found.append(f"HostPath volumes: {volume['name']}")
        if not kinds <= VOLUME_TYPES:
            found.append(f"volume types: {volume['name']} is {sorted(kinds - VOLUME_TYPES)}")

    for container in containers:
        where = container.get("name", "?")
        own = container.get("securityContext", {})
        effective = {**pod, **own}
        if own.get("privileged"):
            found.append(f"privileged containers: {where}")
        if own.get("windowsOptions", {}).get("hostProcess"):
            found.append(f"HostProcess: {where}")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            found.append(f"host ports: {where}")
        if own.get("procMount", "Default") != "Default":
            found.append(f"/proc mount type: {where}")
        apparmor = effective.get("appArmorProfile", {}).get("type", "RuntimeDefault")
        if apparmor not in SECCOMP_TYPES:
            found.append(f"AppArmor: {where} {apparmor}")
        found += _selinux_and_sysctls(own, where)
        capabilities = own.get("capabilities", {})
        added = set(capabilities.get("add", []))
        if not added <= BASELINE_CAPABILITIES:
            found.append(f"capabilities (baseline): {where} adds {sorted(added)}")

        # Restricted.
        if own.get("allowPrivilegeEscalation") is not False:
            found.append(f"privilege escalation: {where} does not set it false")
        if effective.get("runAsNonRoot") is not True:
            found.append(f"running as non-root: {where}")
        if effective.get("runAsUser") == 0:
            found.append(f"running as non-root user: {where} runs as uid 0")
        if effective.get("seccompProfile", {}).get("type") not in SECCOMP_TYPES:
            found.append(f"seccomp: {where} has no RuntimeDefault or Localhost profile")
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"capabilities: {where} does not drop ALL")
        if not added <= RESTRICTED_CAPABILITIES:
            found.append(f"capabilities: {where} adds {sorted(added - RESTRICTED_CAPABILITIES)}")
    if pod.get("runAsUser") == 0:
        found.append("running as non-root user: the pod runs as uid 0")
    return found


def _selinux_and_sysctls(context, where):
    """The baseline's SELinux and sysctl rules for one security context."""
    found = []
    selinux = context.get("seLinuxOptions", {})
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        found.append(f"SELinux: {where}")
    unsafe = {entry["name"] for entry in context.get("sysctls", [])} - SAFE_SYSCTLS
    if unsafe:
        found.append(f"sysctls: {where} sets {sorted(unsafe)}")
    return found
