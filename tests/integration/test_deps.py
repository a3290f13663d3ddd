"""ops/deps.sh installs what the README's first mail needs after `make run`:
swaks with STARTTLS (--tls needs Perl's Net::SSLeay) and curl."""
import os
import re
import subprocess
import unittest

import harness


def run_packages():
    text = open(os.path.join(harness.ROOT, "ops", "deps.sh")).read()
    m = re.search(r'^run_pkgs="([^"]*)"', text, re.M)
    return set(m.group(1).split()) if m else set()


def owner_of(path):
    r = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True, check=True)
    return r.stdout.split(":", 1)[0]


class FirstMailDepsTest(unittest.TestCase):
    def test_readme_first_mail_tools_are_in_the_run_list(self):
        readme = open(os.path.join(harness.ROOT, "README.md")).read()
        self.assertIn("swaks --server 127.0.0.1:2525 --tls", readme)
        pkgs = run_packages()
        self.assertIn("swaks", pkgs)
        self.assertIn("curl", pkgs)
        # swaks --tls loads Net::SSLeay; the package that ships it must be installed by `make run`
        r = subprocess.run(["perl", "-MNet::SSLeay", "-e", 'print $INC{"Net/SSLeay.pm"}'],
                           capture_output=True, text=True, check=True)
        self.assertIn(owner_of(r.stdout), pkgs)

    def test_swaks_reports_tls_support(self):
        r = subprocess.run(["swaks", "--support"], capture_output=True, text=True)
        self.assertIn("=== TLS supported", r.stdout + r.stderr)
        self.assertIn("=== Basic AUTH supported", r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
