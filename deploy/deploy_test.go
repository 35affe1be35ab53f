// Package deploy_test checks the deployment files under deploy/: that they
// parse, agree with each other and with sessiongate's config schema, that the
// PHP settings are real settings of the installed extensions, and that the
// demo app keeps its session in memcached across backends.
package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sessiongate/sessiongate/config"
)

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseConfig(t *testing.T, name string, data []byte) *config.Config {
	t.Helper()
	c, err := config.Parse(name, data)
	if err != nil {
		t.Fatalf("%s is not a valid sessiongate config:\n%v", name, err)
	}
	return c
}

func splitPort(t *testing.T, hostport string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	return host, n
}

// backendHostPort is a backend URL's host and port (80/443 when implicit).
func backendHostPort(t *testing.T, raw string) (string, int) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Port() == "" {
		return u.Hostname(), map[string]int{"http": 80, "https": 443}[u.Scheme]
	}
	return splitPort(t, u.Host)
}

// iniValues reads php.ini text: key = value lines, ; comments, quotes removed.
func iniValues(text string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, ";") {
			continue
		}
		m[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"`)
	}
	return m
}

// savePathServers lists the host:port entries of session.save_path.
func savePathServers(savePath string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(savePath, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, strings.TrimPrefix(f, "tcp://"))
	}
	return out
}

// checkPHPIni asserts that a php.ini snippet stores sessions where c looks
// for them: same handler, same servers in the same order, a copy on every
// server, and the same lifetime.
func checkPHPIni(t *testing.T, name, text string, c *config.Config) {
	t.Helper()
	ini := iniValues(text)
	if c.Session == nil {
		t.Fatalf("%s: config has no session section", name)
	}
	if got := ini["session.save_handler"]; got != c.Session.Handler {
		t.Errorf("%s: session.save_handler = %q, config session.handler = %q", name, got, c.Session.Handler)
	}
	if got := savePathServers(ini["session.save_path"]); !slices.Equal(got, c.Memcached.Servers) {
		t.Errorf("%s: session.save_path servers %q, config memcached.servers %q", name, got, c.Memcached.Servers)
	}
	n := len(c.Memcached.Servers)
	switch c.Session.Handler {
	case "memcache":
		if got := ini["memcache.session_redundancy"]; got != strconv.Itoa(n) {
			t.Errorf("%s: memcache.session_redundancy = %q, want %d (every server)", name, got, n)
		}
	case "memcached":
		if got := ini["memcached.sess_number_of_replicas"]; got != strconv.Itoa(n-1) {
			t.Errorf("%s: memcached.sess_number_of_replicas = %q, want %d (servers-1)", name, got, n-1)
		}
		if got := ini["memcached.sess_binary_protocol"]; got != "On" {
			t.Errorf("%s: memcached.sess_binary_protocol = %q: replicas are off without it", name, got)
		}
	}
	if got, want := ini["session.gc_maxlifetime"], strconv.Itoa(int(c.Session.Lifetime.Seconds())); got != want {
		t.Errorf("%s: session.gc_maxlifetime = %q, config session.lifetime is %s seconds", name, got, want)
	}
}

func TestDemoConfigAndScript(t *testing.T) {
	c := parseConfig(t, "demo/config.yaml", read(t, "demo/config.yaml"))
	if c.Listen != "127.0.0.1:8080" || c.Admin.Listen != "127.0.0.1:9090" || c.Admin.Token != "demo-token" {
		t.Errorf("listen %q admin %q token %q", c.Listen, c.Admin.Listen, c.Admin.Token)
	}
	if c.Health.Path != "/health.php" {
		t.Errorf("health.path = %q", c.Health.Path)
	}
	var phpPorts []string
	for i, b := range c.Backends {
		host, port := backendHostPort(t, b.URL)
		if want := fmt.Sprintf("lamp0%d", i+1); b.Name != want || host != "127.0.0.1" {
			t.Errorf("backends[%d] = %+v, want %s on 127.0.0.1", i, b, want)
		}
		phpPorts = append(phpPorts, strconv.Itoa(port))
	}
	var mcPorts []string
	for _, s := range c.Memcached.Servers {
		_, port := splitPort(t, s)
		mcPorts = append(mcPorts, strconv.Itoa(port))
	}
	checkPHPIni(t, "demo/php-memcache.ini", string(read(t, "demo/php-memcache.ini")), c)

	// run.sh hard-codes the ports; they must be the config's.
	script := string(read(t, "demo/run.sh"))
	for _, v := range []struct{ name, want string }{
		{"mc_ports", "(" + strings.Join(mcPorts, " ") + ")"},
		{"php_ports", "(" + strings.Join(phpPorts, " ") + ")"},
		{"listen_port", strconv.Itoa(mustPort(t, c.Listen))},
		{"admin_port", strconv.Itoa(mustPort(t, c.Admin.Listen))},
	} {
		got := "(missing)"
		if m := regexp.MustCompile(`(?m)^` + v.name + `=(.*)$`).FindStringSubmatch(script); m != nil {
			got = m[1]
		}
		if got != v.want {
			t.Errorf("run.sh: %s=%s, config says %s", v.name, got, v.want)
		}
	}
	if out, err := exec.Command("bash", "-n", "demo/run.sh").CombinedOutput(); err != nil {
		t.Errorf("bash -n demo/run.sh: %v\n%s", err, out)
	}
}

func mustPort(t *testing.T, hostport string) int {
	t.Helper()
	_, p := splitPort(t, hostport)
	return p
}

// compose is the part of compose.yaml the tests look at.
type compose struct {
	Services map[string]struct {
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Build   struct {
			Dockerfile string `yaml:"dockerfile"`
		} `yaml:"build"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		Environment map[string]string `yaml:"environment"`
	} `yaml:"services"`
}

func TestCompose(t *testing.T) {
	var cf compose
	if err := yaml.Unmarshal(read(t, "container/compose.yaml"), &cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	c := parseConfig(t, "container/config.yaml", read(t, "container/config.yaml"))

	sg, ok := cf.Services["sessiongate"]
	if !ok {
		t.Fatal("compose.yaml: no sessiongate service")
	}
	if sg.Build.Dockerfile != "deploy/container/Containerfile" {
		t.Errorf("sessiongate build.dockerfile = %q", sg.Build.Dockerfile)
	}
	cfgPath := argAfter(sg.Command, "-config")
	if !slices.Contains(sg.Volumes, "./config.yaml:"+cfgPath+":ro") {
		t.Errorf("sessiongate: -config %q is not ./config.yaml mounted read-only: %q", cfgPath, sg.Volumes)
	}
	if !slices.Contains(sg.Volumes, "/tmp") {
		t.Errorf("sessiongate: no writable /tmp volume for buffered request bodies: %q", sg.Volumes)
	}
	wantPorts := []string{fmt.Sprintf("%d:%d", mustPort(t, c.Listen), mustPort(t, c.Listen)),
		fmt.Sprintf("127.0.0.1:%d:%d", mustPort(t, c.Admin.Listen), mustPort(t, c.Admin.Listen))}
	if !slices.Equal(sg.Ports, wantPorts) {
		t.Errorf("sessiongate ports = %q, want %q (admin on host loopback only)", sg.Ports, wantPorts)
	}

	for _, b := range c.Backends {
		host, port := backendHostPort(t, b.URL)
		s, ok := cf.Services[host]
		if !ok || port != 80 || s.Build.Dockerfile != "deploy/container/php.Containerfile" || s.Environment["LAMP_NAME"] != b.Name {
			t.Errorf("backend %s (%s): compose service %+v, want php.Containerfile on port 80 with LAMP_NAME", b.Name, b.URL, s)
			continue
		}
		ini := ""
		for _, v := range s.Volumes {
			if src, dst, _ := strings.Cut(v, ":"); strings.HasPrefix(dst, "/usr/local/etc/php/conf.d/") {
				ini = string(read(t, filepath.Join("container", src)))
			}
		}
		checkPHPIni(t, host+" php ini", ini, c)
	}
	for _, srv := range c.Memcached.Servers {
		host, port := splitPort(t, srv)
		s, ok := cf.Services[host]
		if !ok || port != 11211 || s.Image != "docker.io/library/memcached:1.6-alpine" || len(s.Ports) != 0 {
			t.Errorf("memcached %s: compose service %+v, want memcached:1.6-alpine, unpublished", srv, s)
		}
	}

	cfile := string(read(t, "container/Containerfile"))
	for _, want := range []string{"FROM docker.io/library/golang:1.26 AS build", "CGO_ENABLED=0", "-trimpath",
		"FROM gcr.io/distroless/static-debian12:nonroot", "USER 65532"} {
		if !strings.Contains(cfile, want) {
			t.Errorf("Containerfile lacks %q", want)
		}
	}
	php := string(read(t, "container/php.Containerfile"))
	for _, want := range []string{"FROM docker.io/library/php:8.2-apache", "pecl install memcache", "docker-php-ext-enable memcache", "COPY deploy/demo/app/ /var/www/html/"} {
		if !strings.Contains(php, want) {
			t.Errorf("php.Containerfile lacks %q", want)
		}
	}
}

func argAfter(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// k8sObject is the part of a Kubernetes object the tests look at.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Type                     string         `yaml:"type"`
		Replicas                 int            `yaml:"replicas"`
		ServiceName              string         `yaml:"serviceName"`
		ClusterIP                string         `yaml:"clusterIP"`
		PublishNotReadyAddresses bool           `yaml:"publishNotReadyAddresses"`
		Selector                 map[string]any `yaml:"selector"`
		Ports                    []struct {
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot bool `yaml:"runAsNonRoot"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

type container struct {
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	} `yaml:"securityContext"`
	VolumeMounts []volumeMount `yaml:"volumeMounts"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	SubPath   string `yaml:"subPath"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

// port resolves a container port given by name or number.
func (c container) port(t *testing.T, p string) int {
	t.Helper()
	for _, cp := range c.Ports {
		if cp.Name == p || strconv.Itoa(cp.ContainerPort) == p {
			return cp.ContainerPort
		}
	}
	t.Errorf("container %s has no port %q", c.Image, p)
	return 0
}

// configMapFile returns the text a container mounts at path from a ConfigMap.
func configMapFile(t *testing.T, objs map[string]k8sObject, pod podSpec, c container, path string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		key := strings.TrimPrefix(path, m.MountPath+"/")
		if m.SubPath != "" && m.MountPath == path {
			key = m.SubPath
		} else if key == path {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name {
				if text, ok := objs["ConfigMap/"+v.ConfigMap.Name].Data[key]; ok {
					return text
				}
			}
		}
	}
	t.Fatalf("container %s mounts no ConfigMap file at %s", c.Image, path)
	return ""
}

func loadK8s(t *testing.T) map[string]k8sObject {
	t.Helper()
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) == 0 {
		t.Fatal("no kubernetes/*.yaml")
	}
	objs := map[string]k8sObject{}
	for _, f := range files {
		dec := yaml.NewDecoder(bytes.NewReader(read(t, f)))
		for i := 0; ; i++ {
			var o k8sObject
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s document %d lacks apiVersion, kind or metadata.name", f, i)
			}
			key := o.Kind + "/" + o.Metadata.Name
			if _, dup := objs[key]; dup {
				t.Fatalf("%s: %s defined twice", f, key)
			}
			objs[key] = o
		}
	}
	return objs
}

// onlyContainer returns the single container of a workload.
func onlyContainer(t *testing.T, objs map[string]k8sObject, key string) (podSpec, container) {
	t.Helper()
	o, ok := objs[key]
	if !ok || len(o.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%s: missing or not exactly one container", key)
	}
	return o.Spec.Template.Spec, o.Spec.Template.Spec.Containers[0]
}

// checkPodName asserts that host (pod.service) names a StatefulSet pod behind
// a headless Service and that the pod listens on port.
func checkPodName(t *testing.T, objs map[string]k8sObject, host string, port int) container {
	t.Helper()
	pod, svc, _ := strings.Cut(host, ".")
	i := strings.LastIndexByte(pod, '-')
	ord, err := strconv.Atoi(pod[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("%s is not a StatefulSet pod name (NAME-N.SERVICE)", host)
	}
	sts, ok := objs["StatefulSet/"+pod[:i]]
	if !ok || sts.Spec.ServiceName != svc || ord >= sts.Spec.Replicas {
		t.Fatalf("%s: no StatefulSet %s with serviceName %s and more than %d replicas", host, pod[:i], svc, ord)
	}
	if s := objs["Service/"+svc]; s.Spec.ClusterIP != "None" || !s.Spec.PublishNotReadyAddresses {
		t.Errorf("%s: Service %s must be headless and publish not-ready addresses", host, svc)
	}
	_, c := onlyContainer(t, objs, "StatefulSet/"+pod[:i])
	if c.port(t, strconv.Itoa(port)) != port {
		t.Errorf("%s: container does not listen on %d", host, port)
	}
	return c
}

func TestKubernetes(t *testing.T) {
	objs := loadK8s(t)
	c := parseConfig(t, "ConfigMap sessiongate-config", []byte(objs["ConfigMap/sessiongate-config"].Data["config.yaml"]))
	if len(c.Session.SigningKeys) == 0 {
		t.Error("two replicas need shared session.signing_keys")
	}

	dep := objs["Deployment/sessiongate"]
	pod, sg := onlyContainer(t, objs, "Deployment/sessiongate")
	if dep.Spec.Replicas != 2 || !strings.Contains(sg.Image, "sessiongate") {
		t.Errorf("Deployment: replicas %d image %q", dep.Spec.Replicas, sg.Image)
	}
	if got := configMapFile(t, objs, pod, sg, argAfter(sg.Args, "-config")); got != objs["ConfigMap/sessiongate-config"].Data["config.yaml"] {
		t.Error("the -config file is not the sessiongate-config ConfigMap")
	}
	if sg.port(t, "http") != mustPort(t, c.Listen) || sg.port(t, "admin") != mustPort(t, c.Admin.Listen) {
		t.Errorf("container ports %+v, config listen %s admin %s", sg.Ports, c.Listen, c.Admin.Listen)
	}
	for name, p := range map[string]*probe{"readiness": sg.ReadinessProbe, "liveness": sg.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/api/status" || sg.port(t, p.HTTPGet.Port) != mustPort(t, c.Admin.Listen) {
			t.Errorf("%s probe must GET /api/status on the admin port", name)
		}
	}
	if !pod.SecurityContext.RunAsNonRoot || !sg.SecurityContext.ReadOnlyRootFilesystem || sg.Resources.Limits["memory"] == "" || sg.Resources.Requests["cpu"] == "" {
		t.Errorf("Deployment lacks runAsNonRoot, readOnlyRootFilesystem or resources")
	}
	if !slices.ContainsFunc(sg.VolumeMounts, func(m volumeMount) bool { return m.MountPath == "/tmp" }) {
		t.Error("Deployment mounts no writable /tmp for buffered request bodies (the root is read-only)")
	}
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace <= c.Server.ShutdownGrace {
		t.Errorf("terminationGracePeriodSeconds %v <= server.shutdown_grace %v", grace, c.Server.ShutdownGrace)
	}
	svc := objs["Service/sessiongate"]
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80 || sg.port(t, svc.Spec.Ports[0].TargetPort) != mustPort(t, c.Listen) {
		t.Errorf("Service sessiongate must map 80 to the listen port: %+v", svc.Spec.Ports)
	}

	var lamp container
	for _, b := range c.Backends {
		host, port := backendHostPort(t, b.URL)
		lamp = checkPodName(t, objs, host, port)
	}
	for _, s := range c.Memcached.Servers {
		host, port := splitPort(t, s)
		if mc := checkPodName(t, objs, host, port); mc.Image != "docker.io/library/memcached:1.6-alpine" {
			t.Errorf("memcached image %q", mc.Image)
		}
	}
	lampPod, _ := onlyContainer(t, objs, "StatefulSet/lamp")
	checkPHPIni(t, "lamp php ini", configMapFile(t, objs, lampPod, lamp, "/usr/local/etc/php/conf.d/zz-session.ini"), c)

	// Same images as compose builds.
	var cf compose
	if err := yaml.Unmarshal(read(t, "container/compose.yaml"), &cf); err != nil {
		t.Fatal(err)
	}
	if sg.Image != cf.Services["sessiongate"].Image || lamp.Image != cf.Services["lamp01"].Image {
		t.Errorf("images %q, %q differ from compose's %q, %q", sg.Image, lamp.Image, cf.Services["sessiongate"].Image, cf.Services["lamp01"].Image)
	}
}

func TestPHPSnippets(t *testing.T) {
	for _, tc := range []struct{ file, handler string }{
		{"php/memcache-session.ini", "memcache"},
		{"php/memcached-session.ini", "memcached"},
	} {
		ini := string(read(t, tc.file))
		servers := savePathServers(iniValues(ini)["session.save_path"])
		// sessiongate's defaults plus the snippet's servers.
		yml := fmt.Sprintf("backends: [{name: a, url: \"http://10.0.0.21\"}]\nsession: {handler: %s}\nmemcached: {servers: [%s]}\n",
			tc.handler, strings.Join(servers, ", "))
		c := parseConfig(t, tc.file+" as config", []byte(yml))
		checkPHPIni(t, tc.file, ini, c)
		// It overrides session.save_path, and empty it crashes Debian's
		// php-memcache 4.0.5.2 in session_start().
		if _, ok := iniValues(ini)["memcache.session_save_path"]; ok {
			t.Errorf("%s: sets memcache.session_save_path", tc.file)
		}
		if tc.handler == "memcached" {
			v := iniValues(ini)
			for _, k := range []string{"memcached.sess_consistent_hash", "memcached.sess_locking"} {
				if v[k] != "On" {
					t.Errorf("%s: %s = %q, want On", tc.file, k, v[k])
				}
			}
			// Ejecting a node moves sessions and their locks per PHP worker:
			// lost updates and stuck locks (issue 14).
			if k := "memcached.sess_remove_failed_servers"; v[k] != "Off" {
				t.Errorf("%s: %s = %q, want Off", tc.file, k, v[k])
			}
			// 0 means max_execution_time, which may be 0: a lock whose
			// holder died would never expire.
			if n, err := strconv.Atoi(v["memcached.sess_lock_expire"]); err != nil || n <= 0 {
				t.Errorf("%s: memcached.sess_lock_expire = %q, want a positive number of seconds", tc.file, v["memcached.sess_lock_expire"])
			}
			if strings.Contains(v["session.save_path"], "tcp://") {
				t.Errorf("%s: libmemcached rejects tcp:// in save_path", tc.file)
			}
		}
	}
}

// TestPHPIniSettingsExist loads every ini snippet into the real PHP and
// checks each setting exists (a misspelt key is silently ignored by PHP)
// and took the written value.
func TestPHPIniSettingsExist(t *testing.T) {
	php := requirePHP(t, "memcache", "memcached")
	files := []string{"php/memcache-session.ini", "php/memcached-session.ini", "demo/php-memcache.ini", "container/php-memcache.ini"}
	k8s := filepath.Join(t.TempDir(), "k8s-zz-session.ini")
	if err := os.WriteFile(k8s, []byte(loadK8s(t)["ConfigMap/lamp-php"].Data["zz-session.ini"]), 0o644); err != nil {
		t.Fatal(err)
	}
	const check = `foreach (parse_ini_file($argv[1]) as $k => $v) {
		$g = ini_get($k);
		if ($g === false) echo "unknown setting $k\n";
		elseif ($g !== $v) echo "$k is '$g', file says '$v'\n";
	}`
	for _, f := range append(files, k8s) {
		out, err := exec.Command(php, "-c", f, "-r", check, f).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
}

// requirePHP finds php with the given extensions, failing with the Debian
// packages to install when they are missing.
func requirePHP(t *testing.T, exts ...string) string {
	t.Helper()
	php, err := exec.LookPath("php")
	if err != nil {
		t.Fatal("php not found: install the Debian package php-cli")
	}
	out, err := exec.Command(php, "-m").Output()
	if err != nil {
		t.Fatalf("php -m: %v", err)
	}
	for _, e := range exts {
		if !slices.Contains(strings.Fields(string(out)), e) {
			t.Fatalf("php lacks the %s extension: install the Debian package php-%s", e, e)
		}
	}
	return php
}

func TestSystemdUnit(t *testing.T) {
	unit := string(read(t, "sessiongate.service"))
	for _, want := range []string{
		"ExecStartPre=/usr/local/bin/sessiongate check -config /etc/sessiongate/config.yaml",
		"ExecStart=/usr/local/bin/sessiongate run -config /etc/sessiongate/config.yaml -log-format json",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"Restart=on-failure", "LimitNOFILE=65536",
		"DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
		"PrivateTmp=yes", "PrivateDevices=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
		"ProtectKernelLogs=yes", "ProtectControlGroups=yes",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service",
		"ReadOnlyPaths=/etc/sessiongate", "ConfigurationDirectory=sessiongate",
		"\nCapabilityBoundingSet=\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("sessiongate.service lacks %q", strings.TrimSpace(want))
		}
	}
	m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\d+)s$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("sessiongate.service lacks TimeoutStopSec=Ns")
	}
	if stop, _ := strconv.Atoi(m[1]); time.Duration(stop)*time.Second <= config.Default().Server.ShutdownGrace {
		t.Errorf("TimeoutStopSec=%ss must exceed the default shutdown_grace", m[1])
	}
}

// TestDemoApp runs the demo app on two php -S backends sharing one real
// memcached through deploy/demo/php-memcache.ini, and follows one visitor
// across both: the counter, login, escaping and logout.
func TestDemoApp(t *testing.T) {
	php := requirePHP(t, "memcache")
	memcached, err := exec.LookPath("memcached")
	if err != nil {
		if _, err = os.Stat("/usr/bin/memcached"); err != nil {
			t.Fatal("memcached not found: install the Debian package memcached")
		}
		memcached = "/usr/bin/memcached"
	}
	mcPort := freePort(t)
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(mcPort), "-U", "0", "-m", "16"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody")
	}
	start(t, exec.Command(memcached, args...), mcPort)

	app, _ := filepath.Abs("demo/app")
	var bases []string
	for i := 1; i <= 2; i++ {
		port := freePort(t)
		cmd := exec.Command(php, "-c", "demo/php-memcache.ini",
			"-d", fmt.Sprintf("session.save_path=tcp://127.0.0.1:%d", mcPort),
			"-S", fmt.Sprintf("127.0.0.1:%d", port), "-t", app)
		cmd.Env = append(os.Environ(), "PHP_CLI_SERVER_WORKERS=2", fmt.Sprintf("LAMP_NAME=lamp0%d", i))
		start(t, cmd, port)
		bases = append(bases, fmt.Sprintf("http://127.0.0.1:%d", port))
	}

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 5 * time.Second}
	get := func(base, path string, form url.Values) string {
		t.Helper()
		var resp *http.Response
		var err error
		if form == nil {
			resp, err = client.Get(base + path)
		} else {
			resp, err = client.PostForm(base+path, form)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s%s: %s\n%s", base, path, resp.Status, b)
		}
		return string(b)
	}
	field := func(page, id string) string {
		m := regexp.MustCompile(`id="` + id + `">([^<]*)<`).FindStringSubmatch(page)
		if m == nil {
			return ""
		}
		return m[1]
	}

	if body := get(bases[0], "/health.php", nil); body != "ok\n" {
		t.Errorf("health.php = %q", body)
	}
	// Both hostnames are 127.0.0.1, so one cookie jar serves both backends.
	for i := 1; i <= 4; i++ {
		base := bases[i%2]
		page := get(base, "/index.php", nil)
		if got, want := field(page, "backend"), fmt.Sprintf("lamp0%d", i%2+1); got != want {
			t.Errorf("visit %d: backend %q, want %q", i, got, want)
		}
		if got := field(page, "visits"); got != strconv.Itoa(i) {
			t.Errorf("visit %d on %s: visits = %q: the session is not shared through memcached", i, base, got)
		}
	}
	page := get(bases[0], "/login.php", url.Values{"user": {`<b>"bob"</b>`}})
	if got := field(page, "user"); got != "&lt;b&gt;&quot;bob&quot;&lt;/b&gt;" {
		t.Errorf("user shown as %q, want it escaped", got)
	}
	page = get(bases[1], "/index.php", nil)
	if got := field(page, "visits"); got != "5" {
		t.Errorf("after login the session lost its visits: %q", got)
	}
	if got := field(page, "user"); got != "&lt;b&gt;&quot;bob&quot;&lt;/b&gt;" {
		t.Errorf("index.php shows the user as %q, want it escaped", got)
	}
	page = get(bases[1], "/login.php", url.Values{"action": {"logout"}})
	if !strings.Contains(page, `name="user"`) {
		t.Error("after logout the login form is not shown")
	}
	if got := field(get(bases[0], "/index.php", nil), "visits"); got != "1" {
		t.Errorf("after logout visits = %q, want a fresh session", got)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs cmd in its own process group, waits until it listens on port
// and stops the whole group at cleanup: php -S does not pass SIGTERM on to
// its PHP_CLI_SERVER_WORKERS children.
func start(t *testing.T, cmd *exec.Cmd, port int) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		select {
		case <-done:
			t.Fatalf("%s exited early:\n%s", cmd.Path, out.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s is not listening on %s after 10s", cmd.Path, addr)
}
