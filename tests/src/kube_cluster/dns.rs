//! The cluster DNS: CoreDNS (built by `scripts/kube-tools`, imported as an image) as a
//! Deployment behind the `kube-dns` Service at [`CLUSTER_DNS_IP`], with the RBAC and Corefile
//! kubeadm gives it, less `forward` (the test bed has no upstream resolver, and nothing in it
//! needs one). Pods with the default `dnsPolicy` resolve Services as
//! `<svc>.<ns>.svc.cluster.local` and, through their search domains, `<svc>.<ns>` and `<svc>`.

use super::node::{CLUSTER_DNS_IP, CLUSTER_DOMAIN};

/// CoreDNS listens above 1024: its image runs as a non-root user without capabilities. The
/// Service maps port 53 onto it.
const DNS_PORT: u16 = 1053;

/// The manifests, for the image named `image`.
pub(crate) fn manifests(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects:
- {{kind: ServiceAccount, name: coredns, namespace: kube-system}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:{DNS_PORT} {{
        errors
        health {{
            lameduck 2s
        }}
        ready
        kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }}
        prometheus :9153
        cache 30
        loadbalance
        reload
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: {image}
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {{name: dns, containerPort: {DNS_PORT}, protocol: UDP}}
        - {{name: dns-tcp, containerPort: {DNS_PORT}, protocol: TCP}}
        - {{name: metrics, containerPort: 9153, protocol: TCP}}
        volumeMounts:
        - {{name: config, mountPath: /etc/coredns, readOnly: true}}
        livenessProbe:
          httpGet: {{path: /health, port: 8080}}
          periodSeconds: 5
          failureThreshold: 5
        readinessProbe:
          httpGet: {{path: /ready, port: 8181}}
          periodSeconds: 1
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
      volumes:
      - name: config
        configMap: {{name: coredns}}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  clusterIP: {CLUSTER_DNS_IP}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, targetPort: {DNS_PORT}, protocol: UDP}}
  - {{name: dns-tcp, port: 53, targetPort: {DNS_PORT}, protocol: TCP}}
  - {{name: metrics, port: 9153, protocol: TCP}}
"#
    )
}
