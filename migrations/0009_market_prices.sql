-- Market prices from listing statistics (eBay Browse API item search, issue 15): the
-- same `market_prices` row per (provider, sku, size) as StockX and Alias, with the
-- statistics of the active listings read. NULL for providers that answer a market
-- (lowest ask, highest bid, last sale) instead of listings. For eBay rows `lowest_ask`
-- is the listings' minimum (a listing is an ask) and `price_min` repeats it.
ALTER TABLE market_prices ADD COLUMN listing_count INTEGER;   -- listings in the statistics
ALTER TABLE market_prices ADD COLUMN price_min REAL;
ALTER TABLE market_prices ADD COLUMN price_median REAL;
ALTER TABLE market_prices ADD COLUMN price_mean REAL;
ALTER TABLE market_prices ADD COLUMN price_max REAL;
ALTER TABLE market_prices ADD COLUMN listings_total INTEGER;  -- the provider's match count (eBay `total`)
