/* The report of `medshard bench put|get`: every figure beside the limit
 * measured in the same run and the ratio, against the aims, as
 * text (the verb's own figures first) or as one JSON object. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_obj_int.h"

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double obj_median(double *v, size_t n)
{
  if (n == 0)
    return 0;
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double obj_percentile(const double *v, size_t n, unsigned p)
{
  return n == 0 ? 0 : v[n * p / 100 < n ? n * p / 100 : n - 1];
}

double obj_best_mbps(const struct obj_runs *r, uint64_t bytes)
{
  double best = 0;
  for (unsigned i = 0; i < r->n; i++)
    if (r->s[i] > 0 && (double)bytes / r->s[i] / 1e6 > best)
      best = (double)bytes / r->s[i] / 1e6;
  return best;
}

double obj_median_mbps(const struct obj_runs *r, uint64_t bytes)
{
  double s[OBJ_MAX_RUNS];
  memcpy(s, r->s, sizeof s);
  double med = obj_median(s, r->n);
  return med > 0 ? (double)bytes / med / 1e6 : 0;
}

static double min_pos(double a, double b)
{
  return a <= 0 ? b : b <= 0 ? a : a < b ? a : b;
}

void obj_best_limits(const struct obj_report *r, struct obj_best_limits *out)
{
  memset(out, 0, sizeof *out);
  for (unsigned i = 0; i < r->npass; i++) {
    const struct obj_limits *l = &r->pass[i];
    out->fio_write = l->fio_write_bps > out->fio_write ? l->fio_write_bps : out->fio_write;
    out->fio_read = l->fio_read_bps > out->fio_read ? l->fio_read_bps : out->fio_read;
    out->loopback = l->loopback_bps > out->loopback ? l->loopback_bps : out->loopback;
  }
  double share = r->k + r->m > 0 ? (double)r->k / (r->k + r->m) : 0;
  out->put_limit = min_pos(out->fio_write * share, out->loopback);
  out->get_limit = min_pos(out->fio_read, out->loopback);
}

static double ratio(double a, double b)
{
  return b > 0 ? a / b : 0; /* JSON has no inf */
}

static double small_mbps(const struct obj_small *s)
{
  return s->wall_s > 0 ? (double)s->done * OBJ_SMALL / s->wall_s / 1e6 : 0;
}

/* MB/s the phase would reach if its CPU time were the only limit and
 * every CPU of the machine were its own: ncpu x bytes / CPU-seconds. */
static double cpu_ceiling(const struct obj_cpu *c, long ncpu)
{
  double s = c->nodes_s + c->client_s;
  return c->nodes_known && s > 0 ? (double)ncpu * (double)c->bytes / s / 1e6 : 0;
}

/* ---- text ---- */

static void cpu_text(const struct obj_cpu *c, long ncpu)
{
  double gib = (double)c->bytes / (1u << 30);
  if (c->bytes == 0)
    return;
  printf("              CPU per GiB: ");
  if (c->nodes_known)
    printf("nodes %.2f s (busiest node %.2f s), ", c->nodes_s / gib, c->busiest_s / gib);
  printf("client %.2f s", c->client_s / gib);
  if (c->nodes_known)
    printf("; CPU-bound ceiling, all %ld CPUs its own: %.0f MB/s", ncpu, cpu_ceiling(c, ncpu));
  if (c->wall_s > 0)
    printf("\n              other processes on the machine meanwhile: %.2f of its %ld CPUs",
           c->others_s / c->wall_s, ncpu);
  printf("\n");
}

static void runs_text(const struct obj_runs *rs, uint64_t bytes, const char *name, long ncpu)
{
  if (rs->n == 0) {
    printf("%-13s FAILED (no run succeeded)\n", name);
    return;
  }
  printf("%-13s %8.1f MB/s best, %.1f median  (%u run%s:", name, obj_best_mbps(rs, bytes),
         obj_median_mbps(rs, bytes), rs->n, rs->n == 1 ? "" : "s");
  for (unsigned i = 0; i < rs->n; i++)
    printf(" %.3f", rs->s[i]);
  printf(" s)%s\n", rs->rc != 0 ? "  SOME RUNS FAILED" : "");
  cpu_text(&rs->cpu, ncpu);
}

static void print_small(const struct obj_report *r)
{
  const struct obj_small *s = &r->small;
  if (r->o->small_count == 0)
    return;
  printf("small objects %8.1f objects/s = %.1f MB/s  (%" PRIu64 " x %u KiB from %u clients in"
         " %.2f s, %" PRIu64 " failed); PUT latency p50 %.1f ms, p99 %.1f ms\n",
         s->wall_s > 0 ? (double)s->done / s->wall_s : 0, small_mbps(s), s->done,
         OBJ_SMALL >> 10, r->o->clients, s->wall_s, s->failed, s->p50_ms, s->p99_ms);
  cpu_text(&r->small_cpu, r->ncpu);
}

static void print_degraded(const struct obj_report *r)
{
  if (r->deg_skipped != NULL && r->deg.n == 0) {
    printf("degraded GET  not run: %s\n", r->deg_skipped);
    return;
  }
  printf("degraded GET  nodes");
  for (unsigned i = 0; i < r->ndown; i++)
    printf(" %" PRIu32, r->down[i]);
  printf(" SIGKILLed, each holding a data shard (read through parity decode; restarted"
         " after):\n");
  runs_text(&r->deg, r->o->size, "degraded GET", r->ncpu);
}

static void print_passes(const struct obj_report *r, int which)
{
  printf(" (passes:");
  for (unsigned i = 0; i < r->npass; i++) {
    const struct obj_limits *l = &r->pass[i];
    printf(" %.1f", (which == 0 ? l->fio_write_bps : which == 1 ? l->fio_read_bps
                                                                : l->loopback_bps) / 1e6);
  }
  printf(")\n");
}

static void print_limits(const struct obj_report *r, const struct obj_best_limits *b)
{
  const struct obj_limits *l = &r->pass[0];
  printf("limits, same run (best of %u passes: after the PUTs, at the end):\n", r->npass);
  if (r->fio) {
    printf("  fio write     %8.1f MB/s on disk, %u jobs x %" PRIu64 " MiB at once; x %u/%u ="
           " %.1f MB/s of client bytes", b->fio_write / 1e6, l->write_jobs, l->job_bytes >> 20,
           r->k, r->k + r->m, b->fio_write * r->k / (r->k + r->m) / 1e6);
    print_passes(r, 0);
    printf("  fio read      %8.1f MB/s, %u jobs reading those files", b->fio_read / 1e6,
           l->read_jobs);
    print_passes(r, 1);
    printf("                (io_uring, direct=1, bs 1M, iodepth 1 per job, end_fsync on"
           " writes; in %s's filesystem)\n", r->o->dir ? r->o->dir : "the temp dir");
  } else {
    printf("  fio           not installed: no disk limit (apt-get install fio)\n");
  }
  printf("  loopback TCP  %8.1f MB/s, one stream, 1 MiB sends, %" PRIu64 " MiB, sender and"
         " receiver threads", b->loopback / 1e6, l->loop_bytes >> 20);
  print_passes(r, 2);
  printf("  (client side: the body generator makes and sums %.1f GB/s; its time is in the PUT)\n",
         r->gen_gbps);
}

static void print_ratio(const char *name, double best, double median, double limit, double aim)
{
  printf("  %-34s = %.1f / %.1f = %.2f (median %.2f)", name, best, limit / 1e6,
         ratio(best, limit / 1e6), ratio(median, limit / 1e6));
  if (aim > 0)
    printf(" | aim >= %.2f: %s\n", aim, ratio(best, limit / 1e6) >= aim ? "met" : "NOT MET");
  else
    printf(" (no aim)\n");
}

static void print_ratios(const struct obj_report *r, const struct obj_best_limits *b)
{
  uint64_t sz = r->o->size;
  char put[64];
  snprintf(put, sizeof put, "PUT / min(fio write x %u/%u, loop)", r->k, r->k + r->m);
  printf("ratios (best run / best limit pass; the aim is judged on the best run):\n");
  bool get_first = r->o->get_first;
  for (int i = 0; i < 2; i++) {
    if ((i == 0) != get_first)
      print_ratio(put, obj_best_mbps(&r->put, sz), obj_median_mbps(&r->put, sz), b->put_limit,
                  OBJ_AIM_PUT);
    else
      print_ratio("GET / min(fio read, loopback)", obj_best_mbps(&r->get, sz),
                  obj_median_mbps(&r->get, sz), b->get_limit, OBJ_AIM_GET);
  }
  if (r->deg.n > 0)
    print_ratio("degraded GET / min(fio read, loop)", obj_best_mbps(&r->deg, sz),
                obj_median_mbps(&r->deg, sz), b->get_limit, 0);
  if (r->o->small_count > 0)
    print_ratio("small MB/s / PUT limit", small_mbps(&r->small), small_mbps(&r->small),
                b->put_limit, 0);
}

void obj_print_human(const struct obj_report *r)
{
  const struct obj_opts *o = r->o;
  struct obj_best_limits b;
  obj_best_limits(r, &b);
  printf("medshard bench %s: %.*f %s object (%" PRIu64 " bytes), ", o->get_first ? "get" : "put",
         o->size >= (1u << 30) ? 2 : 1, (double)o->size / (o->size >= (1u << 30) ? 1u << 30 : 1u << 20),
         o->size >= (1u << 30) ? "GiB" : "MiB", o->size);
  if (o->node == NULL)
    printf("%u local nodes (dev up %.1f s), ", o->nodes, r->up_s);
  else
    printf("cluster at %s, ", o->node);
  printf("bucket %s %u+%u, %u run%s per figure\n", o->bucket, r->k, r->m, o->runs,
         o->runs == 1 ? "" : "s");
  if (o->get_first) {
    runs_text(&r->get, o->size, "GET", r->ncpu);
    print_degraded(r);
    runs_text(&r->put, o->size, "PUT", r->ncpu);
    print_small(r);
  } else {
    runs_text(&r->put, o->size, "PUT", r->ncpu);
    print_small(r);
    runs_text(&r->get, o->size, "GET", r->ncpu);
    print_degraded(r);
  }
  print_limits(r, &b);
  print_ratios(r, &b);
}

/* ---- JSON ---- */

static void cpu_json(const struct obj_cpu *c, long ncpu)
{
  printf(",\"cpu\":{\"bytes\":%" PRIu64 ",\"wall_s\":%.3f,\"client_s\":%.3f,\"others_s\":%.3f",
         c->bytes, c->wall_s, c->client_s, c->others_s);
  if (c->nodes_known)
    printf(",\"nodes_s\":%.3f,\"busiest_node_s\":%.3f,\"ceiling_mbps\":%.1f}", c->nodes_s,
           c->busiest_s, cpu_ceiling(c, ncpu));
  else
    printf(",\"nodes_s\":null,\"busiest_node_s\":null,\"ceiling_mbps\":null}");
}

static void runs_json(const char *name, const struct obj_runs *rs, uint64_t bytes, double limit,
                      double aim, long ncpu)
{
  if (rs->n == 0) {
    printf(",\"%s\":null", name);
    return;
  }
  double best = obj_best_mbps(rs, bytes), med = obj_median_mbps(rs, bytes);
  printf(",\"%s\":{\"ok\":%s,\"best_mbps\":%.2f,\"median_mbps\":%.2f,\"ratio\":%.4f,"
         "\"ratio_median\":%.4f", name, rs->rc == 0 ? "true" : "false", best, med,
         ratio(best, limit / 1e6), ratio(med, limit / 1e6));
  if (aim > 0)
    printf(",\"aim\":%.2f,\"aim_met\":%s", aim, ratio(best, limit / 1e6) >= aim ? "true" : "false");
  cpu_json(&rs->cpu, ncpu);
  printf(",\"runs_s\":[");
  for (unsigned i = 0; i < rs->n; i++)
    printf("%s%.4f", i ? "," : "", rs->s[i]);
  printf("]}");
}

static void limits_json(const struct obj_report *r, const struct obj_best_limits *b)
{
  printf(",\"limits\":{\"fio\":%s,\"fio_write_mbps\":%.2f,\"fio_write_client_mbps\":%.2f,"
         "\"fio_read_mbps\":%.2f,\"loopback_mbps\":%.2f,\"put_limit_mbps\":%.2f,"
         "\"get_limit_mbps\":%.2f,\"passes\":[", r->fio ? "true" : "false", b->fio_write / 1e6,
         r->k + r->m ? b->fio_write * r->k / (r->k + r->m) / 1e6 : 0, b->fio_read / 1e6,
         b->loopback / 1e6, b->put_limit / 1e6, b->get_limit / 1e6);
  for (unsigned i = 0; i < r->npass; i++) {
    const struct obj_limits *l = &r->pass[i];
    printf("%s{\"fio_write_mbps\":%.2f,\"fio_read_mbps\":%.2f,\"loopback_mbps\":%.2f,"
           "\"write_jobs\":%u,\"read_jobs\":%u,\"job_bytes\":%" PRIu64 ",\"loop_bytes\":%" PRIu64
           "}", i ? "," : "", l->fio_write_bps / 1e6, l->fio_read_bps / 1e6,
           l->loopback_bps / 1e6, l->write_jobs, l->read_jobs, l->job_bytes, l->loop_bytes);
  }
  printf("]}");
}

static void small_json(const struct obj_report *r, const struct obj_best_limits *b)
{
  const struct obj_small *s = &r->small;
  if (r->o->small_count == 0) {
    printf(",\"small\":null");
    return;
  }
  printf(",\"small\":{\"ok\":%s,\"object_bytes\":%u,\"clients\":%u,\"count\":%" PRIu64
         ",\"done\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"seconds\":%.4f,\"objects_per_s\":%.2f,"
         "\"mbps\":%.2f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"ratio_to_put_limit\":%.4f",
         r->small_rc == 0 ? "true" : "false", OBJ_SMALL, r->o->clients, r->o->small_count, s->done,
         s->failed, s->wall_s, s->wall_s > 0 ? (double)s->done / s->wall_s : 0, small_mbps(s),
         s->p50_ms, s->p99_ms, ratio(small_mbps(s), b->put_limit / 1e6));
  cpu_json(&r->small_cpu, r->ncpu);
  printf("}");
}

void obj_print_json(const struct obj_report *r)
{
  const struct obj_opts *o = r->o;
  struct obj_best_limits b;
  obj_best_limits(r, &b);
  printf("{\"bench\":\"%s\",\"size\":%" PRIu64 ",\"nodes\":%u,\"k\":%u,\"m\":%u,\"runs\":%u,"
         "\"up_s\":%.3f,\"generator_gbps\":%.3f,\"cpus\":%ld", o->get_first ? "get" : "put",
         o->size, o->node ? 0 : o->nodes, r->k, r->m, o->runs, r->up_s, r->gen_gbps, r->ncpu);
  runs_json("put", &r->put, o->size, b.put_limit, OBJ_AIM_PUT, r->ncpu);
  runs_json("get", &r->get, o->size, b.get_limit, OBJ_AIM_GET, r->ncpu);
  runs_json("degraded_get", &r->deg, o->size, b.get_limit, 0, r->ncpu);
  printf(",\"killed\":[");
  for (unsigned i = 0; i < r->ndown; i++)
    printf("%s%" PRIu32, i ? "," : "", r->down[i]);
  printf("],\"degraded_skipped\":");
  if (r->deg_skipped != NULL)
    printf("\"%s\"", r->deg_skipped);
  else
    printf("null");
  small_json(r, &b);
  limits_json(r, &b);
  printf("}\n");
}
