/* Synthetic FASTQ for medshard's demo and tests: fixed-length reads of
 * random ACGT (rare N) with Phred+33 qualities that fall along the read,
 * deterministic from --seed, written through one 1 MiB buffer so memory
 * stays bounded at any size. Built and run by scripts/gen-fastq; see
 * docs/testdata.md for the record layout. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROG "gen-fastq"
#define BUF_SIZE (1u << 20)
#define MAX_READ_LEN 100000u
#define Q_MIN 2  /* '#': the quality of an N */
#define Q_MAX 41 /* 'J': Illumina 1.8+ ceiling */

/* xoshiro256** seeded through splitmix64: fast, and its output for a seed
 * is fixed by the algorithm, so files never change with the compiler. */
struct rng {
	uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

struct out {
	int fd;
	const char *name; /* for messages */
	char *buf;
	size_t used;
};

/* Writes the whole buffer, resuming after short writes and EINTR. */
static int out_flush(struct out *o)
{
	size_t done = 0;
	while (done < o->used) {
		ssize_t n = write(o->fd, o->buf + done, o->used - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	o->used = 0;
	return 0;
}

/* Per-base lookup tables, indexed by 16 random bits: 2 bits pick the base,
 * 10 bits decide N (1 in 1024), 4 bits jitter the quality by -8..+7 around a
 * per-position mean that falls from Q38 to Q28 along the read. Tables keep
 * the inner loop free of branches (about 3x faster than computing each). */
struct tables {
	char base[1u << 16];
	signed char jitter[1u << 16]; /* JIT_N marks an N */
	unsigned char mean[MAX_READ_LEN];
};
#define JIT_N (-100)

static void tables_init(struct tables *t, unsigned len)
{
	static const char acgt[4] = {'A', 'C', 'G', 'T'};
	for (unsigned b = 0; b < (1u << 16); b++) {
		int n = ((b >> 2) & 0x3ffu) == 0;
		t->base[b] = n ? 'N' : acgt[b & 3u];
		t->jitter[b] = (signed char)(n ? JIT_N : (int)(b >> 12) - 8);
	}
	for (unsigned i = 0; i < len; i++)
		t->mean[i] = (unsigned char)(38 - 10 * i / len);
}

/* One record at the end of the buffer (which has room for it). */
static void put_record(struct out *o, const struct tables *t, struct rng *r,
		       const char *head, size_t head_len, unsigned len)
{
	char *p = o->buf + o->used, *seq, *qual;
	memcpy(p, head, head_len);
	seq = p + head_len;
	qual = seq + len + 3;
	uint64_t w = 0;
	for (unsigned i = 0; i < len; i++) {
		if ((i & 3) == 0)
			w = rng_next(r);
		unsigned bits = (unsigned)(w >> (16 * (i & 3))) & 0xffffu;
		int q = t->mean[i] + t->jitter[bits];
		q = q > Q_MAX ? Q_MAX : q;
		q = q < Q_MIN ? Q_MIN : q; /* an N's -100 lands here */
		seq[i] = t->base[bits];
		qual[i] = (char)(33 + q);
	}
	memcpy(seq + len, "\n+\n", 3);
	qual[len] = '\n';
	o->used = (size_t)(qual + len + 1 - o->buf);
}

/* Parses "123", "64K", "256M", "2G", "1T" (binary multiples) into *v. */
static int parse_size(const char *s, uint64_t *v)
{
	char *end;
	errno = 0;
	if (*s < '0' || *s > '9')
		return -1;
	unsigned long long n = strtoull(s, &end, 10);
	if (errno)
		return -1;
	unsigned shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (*end || n > (UINT64_MAX >> shift))
		return -1;
	*v = (uint64_t)n << shift;
	return 0;
}

static int parse_uint(const char *s, uint64_t max, uint64_t *v)
{
	char *end;
	errno = 0;
	if (*s < '0' || *s > '9')
		return -1;
	unsigned long long n = strtoull(s, &end, 10);
	if (errno || *end || n > max)
		return -1;
	*v = n;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: " PROG " OUT.fastq|- [--size BYTES] [--seed S] [--read-length L]\n"
		   "  --size         stop before the record that would pass BYTES;\n"
		   "                 K/M/G/T are binary multiples (default 256M)\n"
		   "  --seed         same seed, same bytes (default 1)\n"
		   "  --read-length  bases per read, 1..%u (default 150)\n",
		MAX_READ_LEN);
}

struct opts {
	const char *path;
	uint64_t size, seed, len;
};

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longs[] = {
		{"size", required_argument, NULL, 's'},
		{"seed", required_argument, NULL, 'S'},
		{"read-length", required_argument, NULL, 'l'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;
	*o = (struct opts){NULL, 256u << 20, 1, 150};
	while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
		switch (c) {
		case 's':
			if (parse_size(optarg, &o->size) == 0)
				break;
			fprintf(stderr, PROG ": --size %s: not a size (e.g. 4096, 8M, 2G)\n", optarg);
			return 2;
		case 'S':
			if (parse_uint(optarg, UINT64_MAX, &o->seed) == 0)
				break;
			fprintf(stderr, PROG ": --seed %s: not an unsigned integer\n", optarg);
			return 2;
		case 'l':
			if (parse_uint(optarg, MAX_READ_LEN, &o->len) == 0 && o->len > 0)
				break;
			fprintf(stderr, PROG ": --read-length %s: must be 1..%u\n", optarg, MAX_READ_LEN);
			return 2;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, PROG ": expected one output path (or - for stdout)\n");
		usage(stderr);
		return 2;
	}
	o->path = argv[optind];
	return 0;
}

/* Writes records 0, 1, ... while the next one still fits in op->size;
 * *written counts the bytes that reached the output. */
static int generate(const struct opts *op, const struct tables *t, struct out *o,
		    uint64_t *written, uint64_t *reads)
{
	struct rng r;
	char head[64];
	uint64_t x = op->seed, total = 0, i;
	int rc;
	for (int k = 0; k < 4; k++)
		r.s[k] = splitmix64(&x);
	for (i = 0;; i++) {
		int h = snprintf(head, sizeof head, "@synthetic.%" PRIu64 ".%" PRIu64 "\n",
				 op->seed, i);
		uint64_t need = (uint64_t)h + 2 * op->len + 4;
		if (total + need > op->size)
			break;
		if (o->used + need > BUF_SIZE) {
			rc = out_flush(o);
			if (rc < 0)
				return rc;
			*written = total;
		}
		put_record(o, t, &r, head, (size_t)h, (unsigned)op->len);
		total += need;
	}
	*reads = i;
	rc = out_flush(o);
	if (rc == 0)
		*written = total;
	return rc;
}

/* The size of the first record, the smallest: later indexes have more digits. */
static uint64_t first_record_size(const struct opts *op)
{
	char head[64];
	int h = snprintf(head, sizeof head, "@synthetic.%" PRIu64 ".0\n", op->seed);
	return (uint64_t)h + 2 * op->len + 4;
}

/* Opens the output: stdout for "-", else a temporary name beside the path
 * (renamed by out_close), so a killed run never leaves a short file that
 * looks whole. */
static int out_open(struct out *o, const char *path, char **tmp)
{
	*tmp = NULL;
	if (strcmp(path, "-") == 0) {
		o->fd = 1;
		o->name = "stdout";
		return 0;
	}
	o->name = path;
	if (asprintf(tmp, "%s.tmp.%ld", path, (long)getpid()) < 0) {
		*tmp = NULL;
		fprintf(stderr, PROG ": out of memory\n");
		return -1;
	}
	o->fd = open(*tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (o->fd < 0) {
		fprintf(stderr, PROG ": cannot create %s (written as %s, then renamed): %s\n",
			path, *tmp, strerror(errno));
		free(*tmp);
		*tmp = NULL;
		return -1;
	}
	return 0;
}

/* Closes a named output and publishes it if ok, else removes it. */
static int out_close(struct out *o, char *tmp, int ok)
{
	if (!tmp)
		return ok ? 0 : -1;
	if (close(o->fd) != 0 && ok) {
		fprintf(stderr, PROG ": closing %s: %s\n", tmp, strerror(errno));
		ok = 0;
	}
	if (ok && rename(tmp, o->name) != 0) {
		fprintf(stderr, PROG ": cannot rename %s to %s: %s\n", tmp, o->name,
			strerror(errno));
		ok = 0;
	}
	if (!ok)
		unlink(tmp);
	free(tmp);
	return ok ? 0 : -1;
}

_Static_assert(2 * MAX_READ_LEN + 64 + 4 <= BUF_SIZE, "the longest record fits the buffer");

int main(int argc, char **argv)
{
	struct opts op;
	struct out o = {.fd = -1};
	struct tables *t;
	char *tmp;
	uint64_t written = 0, reads = 0;
	int rc = parse_opts(argc, argv, &op);
	if (rc)
		return rc;
	if (first_record_size(&op) > op.size) {
		fprintf(stderr, PROG ": --size %" PRIu64 " is smaller than one record (%" PRIu64
				" bytes at --read-length %" PRIu64 ")\n",
			op.size, first_record_size(&op), op.len);
		return 2;
	}
	o.buf = malloc(BUF_SIZE);
	t = malloc(sizeof *t);
	if (!o.buf || !t) {
		fprintf(stderr, PROG ": out of memory for a %u-byte buffer\n", BUF_SIZE);
		rc = 1;
		goto free_mem;
	}
	tables_init(t, (unsigned)op.len);
	if (out_open(&o, op.path, &tmp) != 0) {
		rc = 1;
		goto free_mem;
	}
	rc = generate(&op, t, &o, &written, &reads);
	if (rc < 0)
		fprintf(stderr, PROG ": writing %s failed after %" PRIu64 " bytes: %s\n",
			o.name, written, strerror(-rc));
	if (out_close(&o, tmp, rc == 0) != 0) {
		rc = 1;
		goto free_mem;
	}
	fprintf(stderr, PROG ": wrote %" PRIu64 " reads of %" PRIu64 " bases (%" PRIu64
			" bytes, seed %" PRIu64 ") to %s\n",
		reads, op.len, written, op.seed, o.name);
free_mem:
	free(t);
	free(o.buf);
	return rc;
}
