/**
 * Configuration of the gateway (routes, upstreams, upstream credentials), audit output and
 * operations endpoints. Owned by the gateway work; the top-level schema imports it.
 */
import { z } from 'zod';

export const gatewaySchema = z.strictObject({}).meta({ description: 'The gateway: routes to upstreams, their authentication and rules.' });

export const auditSchema = z.strictObject({}).meta({ description: 'Audit trail outputs.' });
